"""The model option `tokenizer=` gives exact counts for an OpenAI-compatible server (it used to be
accepted and silently ignored)."""

from __future__ import annotations

import pytest

from leanthink.backends import load_backend
from leanthink.errors import ConfigError

from .conftest import smollm_path


def test_a_missing_tokenizer_file_fails_before_any_network_call():
    # Port 9 on 127.0.0.1 is closed: a connection attempt would give a different error.
    with pytest.raises(ConfigError, match="tokenizer file not found: /nope/x.gguf"):
        load_backend("openai:http://127.0.0.1:9/v1#m?tokenizer=/nope/x.gguf")


def test_an_empty_tokenizer_value_is_an_error():
    with pytest.raises(ConfigError, match="tokenizer needs a value"):
        load_backend("openai:http://127.0.0.1:9/v1#m?tokenizer=")


def test_tokenizer_is_only_an_option_of_openai_backends():
    with pytest.raises(ConfigError, match="unknown option.*tokenizer"):
        load_backend("smollm2-135m?tokenizer=x.gguf")


def test_gguf_vocabulary_counts_exactly_like_the_served_model(tiny, monkeypatch):
    """A local GGUF vocabulary replaces the server's tokenize endpoint: same ids as llama.cpp."""
    from leanthink.backends.local_tokenizer import load_tokenizer

    enc = load_tokenizer(smollm_path())
    text = "<|im_start|>user\nJanet has 3 apples; she buys 5 more.<|im_end|>\n"
    assert enc(text) == tiny.llm.tokenize(text.encode(), add_bos=False, special=True)


@pytest.mark.slow
def test_openai_backend_uses_the_local_tokenizer_instead_of_estimating(llama_server, tiny):
    be = load_backend(f"openai:{llama_server}#smollm2-135m?template=chatml&tokenizer={smollm_path()}")
    # Any remote tokenize call would be a bug now: make it fail loudly.
    be._tokenize_remote = lambda text: pytest.fail("remote tokenize called")
    text = "What is 17 * 23? Think step by step."
    assert be.count_tokens(text) == tiny.count_tokens(text)
    assert be.encode(text) == tiny.llm.tokenize(text.encode(), add_bos=False, special=True)
    assert be.approximate_counts is False
