"""The OpenAI-compatible backend against a real llama-cpp-python server on 127.0.0.1."""

import json

import pytest

from leanthink import solve
from leanthink.backends import load_backend
from leanthink.backends.base import SamplingParams
from leanthink.errors import BackendUnavailableError, CapabilityError, ConfigError

from .conftest import free_port


@pytest.fixture(scope="module")
def raw(llama_server):
    be = load_backend(f"openai:{llama_server}#smollm2-135m?template=chatml")
    yield be
    be.close()


@pytest.fixture(scope="module")
def chat(llama_server):
    be = load_backend(f"openai:{llama_server}#smollm2-135m")
    yield be
    be.close()


def test_modes_and_capabilities(raw, chat):
    assert raw.mode == "completions" and raw.capabilities.prefix_continuation
    assert chat.mode == "chat" and not chat.capabilities.prefix_continuation


def test_raw_completion_stream_with_logprobs(raw):
    p = raw.render_chat([{"role": "user", "content": "Say hi"}])
    chunks = list(raw.stream(p, SamplingParams(max_tokens=8, logprobs=2)))
    toks = [c for c in chunks if c.text]
    assert 1 <= len(toks) <= 8
    assert all(c.logprob is not None and c.logprob <= 0 for c in toks)
    assert all(len(c.top_logprobs) == 2 for c in toks)
    assert chunks[-1].finish_reason in ("stop", "length")


def test_server_side_tokenizer_counts(raw):
    assert raw.count_tokens("hello world") == 2
    assert not raw.approximate_counts


def test_stop_and_continue_over_http(raw):
    """Cut thinking at N tokens, continue from the raw prefix with the forced answer prefix."""
    r = solve("What is 2+2?", method="think(max_thinking=12,max_answer=20)", backend=raw)
    assert r.finish_reason == "budget" and r.usage.thinking == 12
    assert r.answer_text.startswith("**Final Answer**")
    assert r.backend == "openai"


def test_chat_mode_refuses_prefix_edits(chat):
    p = chat.render_chat([{"role": "user", "content": "hi"}])
    with pytest.raises(CapabilityError, match="template"):
        chat.stream(p + "<think>\nI was thinking</think>", SamplingParams(max_tokens=4))
    with pytest.raises(CapabilityError, match="completions mode"):
        chat.stream("raw text", SamplingParams(max_tokens=4))


def test_chat_mode_streams_what_the_server_generates(chat, llama_server):
    """Chat mode sends the messages as they are and reassembles the server's events into
    exactly the text (and finish reason) the server gives for the same request unstreamed."""
    import httpx

    msgs = [{"role": "user", "content": "Say hi"}]
    sent = []
    chat.http.event_hooks["request"] = [lambda req: sent.append(json.loads(req.content))]
    try:
        chunks = list(chat.stream(chat.render_chat(msgs), SamplingParams(max_tokens=6)))
    finally:
        chat.http.event_hooks["request"] = []
    assert [b["messages"] for b in sent] == [msgs] and sent[0]["stream"] is True and sent[0]["max_tokens"] == 6
    body = {**sent[0], "stream": False}
    want = httpx.post(f"{llama_server}/chat/completions", json=body, timeout=60).json()["choices"][0]
    assert "".join(c.text for c in chunks) == want["message"]["content"]
    assert chunks[-1].finish_reason == ("length" if want["finish_reason"] == "length" else "stop")
    assert sum(1 for c in chunks if c.text) <= 6 and all(c.finish_reason is None for c in chunks[:-1])


def test_unreachable_server_is_a_clear_error():
    port = free_port()
    with pytest.raises(BackendUnavailableError, match=f"cannot reach.*127.0.0.1:{port}"):
        load_backend(f"openai:http://127.0.0.1:{port}/v1#m?max_retries=1")


def test_completions_mode_without_template_is_refused(llama_server):
    with pytest.raises(ConfigError, match="template"):
        load_backend(f"openai:{llama_server}#smollm2-135m?mode=completions")
