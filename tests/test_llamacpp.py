"""The llama.cpp backend against real models."""

import pytest

from leanthink.backends.base import SamplingParams
from leanthink.backends.continuation import Continuation
from leanthink.errors import ConfigError


def _gen(be, prompt, **kw):
    return list(be.stream(prompt, SamplingParams(**kw)))


def test_stream_chunks_have_tokens_and_logprobs(tiny):
    p = tiny.render_chat([{"role": "user", "content": "Say hello."}])
    chunks = _gen(tiny, p, max_tokens=12, logprobs=3)
    assert 1 <= sum(c.n_tokens for c in chunks) <= 12
    for c in chunks[:-1]:
        assert len(c.token_ids) == 1
        assert c.logprob is not None and c.logprob <= 0
        assert len(c.top_logprobs) == 3
        top = list(c.top_logprobs.values())
        assert top == sorted(top, reverse=True)
        assert c.logprob <= top[0] + 1e-6
    assert chunks[-1].finish_reason in ("stop", "length")


def test_max_tokens_and_length_finish(tiny):
    p = tiny.render_chat([{"role": "user", "content": "Write a long story about a dragon."}])
    chunks = _gen(tiny, p, max_tokens=5)
    assert sum(c.n_tokens for c in chunks) == 5
    assert chunks[-1].finish_reason == "length"


def test_greedy_is_deterministic_and_seeded_sampling_repeats(tiny):
    p = tiny.render_chat([{"role": "user", "content": "Name three colours."}])
    a = "".join(c.text for c in _gen(tiny, p, max_tokens=15))
    b = "".join(c.text for c in _gen(tiny, p, max_tokens=15))
    assert a == b
    s1 = "".join(c.text for c in _gen(tiny, p, max_tokens=15, temperature=1.0, seed=7))
    s2 = "".join(c.text for c in _gen(tiny, p, max_tokens=15, temperature=1.0, seed=7))
    assert s1 == s2


def test_stop_string_truncates(tiny):
    p = "Count: 1, 2, 3, 4, 5, 6, 7, 8,"
    full = "".join(c.text for c in _gen(tiny, p, max_tokens=20))
    assert " 10" in full  # the tiny model continues the count
    chunks = _gen(tiny, p, max_tokens=20, stop=[" 10"])
    text = "".join(c.text for c in chunks)
    assert " 10" not in text and text == full[: full.index(" 10")]
    assert chunks[-1].finish_reason == "stop"


def _counting_eval(be):
    evaluated = []
    real_eval = be.llm.eval
    be.llm.eval = lambda toks: (evaluated.append(len(toks)), real_eval(toks))[1]
    return evaluated


def test_continuation_reuses_kv_cache_and_text_prompt_is_fresh(tiny):
    """Continuing from the exact ids of a stream (plus forced text) evaluates only the new
    tokens; the same text as a plain prompt is evaluated as a fresh prompt would be."""
    p = tiny.render_chat([{"role": "user", "content": "Explain what a prime number is in two sentences."}])
    chunks = _gen(tiny, p, max_tokens=20)
    ids = [t for c in chunks for t in c.token_ids]
    first = "".join(c.text for c in chunks)
    cont = Continuation.of(p).generated(ids, first).forced(" In short,")
    assert cont == p + first + " In short,"
    evaluated = _counting_eval(tiny)
    try:
        _gen(tiny, cont, max_tokens=3)
        n_cont = len(evaluated)
        first_eval = evaluated[0]
        _gen(tiny, p + first + " In short,", max_tokens=3)
    finally:
        del tiny.llm.eval
    forced = len(tiny.encode(" In short,")) - (1 if tiny.llm._model.add_bos_token() else 0)
    assert first_eval <= forced + 1, f"re-evaluated {first_eval} tokens for {forced} new ones"
    prompt_len = len(tiny.encode(p + first + " In short,"))
    assert evaluated[n_cont] == prompt_len  # the plain prompt: one fresh batch


def test_same_prompt_gives_same_numbers_whatever_ran_before(tiny):
    """Greedy chains and their logprobs are a function of the prompt, not of the cache."""
    p = tiny.render_chat([{"role": "user", "content": "Name three colours."}])
    ref = [(c.token_ids, c.logprob) for c in _gen(tiny, p, max_tokens=24, logprobs=0)]
    again = [(c.token_ids, c.logprob) for c in _gen(tiny, p, max_tokens=24, logprobs=0)]
    _gen(tiny, p + "1. Red", max_tokens=4)  # shares the prompt, then diverges
    after = [(c.token_ids, c.logprob) for c in _gen(tiny, p, max_tokens=24, logprobs=0)]
    assert ref == again == after


def test_resumed_continuation_equals_uninterrupted_stream(tiny):
    """Stop a stream, probe something else, resume from the exact ids: same tokens and
    logprobs as the stream that never stopped."""
    p = tiny.render_chat([{"role": "user", "content": "List the planets of the solar system."}])
    full = _gen(tiny, p, max_tokens=30, logprobs=0)
    head = _gen(tiny, p, max_tokens=12, logprobs=0)
    ids = [t for c in head for t in c.token_ids]
    text = "".join(c.text for c in head)
    _gen(tiny, Continuation.of(p).generated(ids[:9], "").forced("\nAnswer:"), max_tokens=5)  # a probe
    rest = _gen(tiny, Continuation.of(p).generated(ids, text), max_tokens=18, logprobs=0)
    assert [(c.token_ids, c.logprob) for c in head + rest] == [(c.token_ids, c.logprob) for c in full]
    assert text + "".join(c.text for c in rest) == "".join(c.text for c in full)


def test_closing_stream_stops_generation(tiny):
    p = tiny.render_chat([{"role": "user", "content": "Write a long story about a dragon."}])
    stream = tiny.stream(p, SamplingParams(max_tokens=200))
    got = [next(stream) for _ in range(3)]
    evaluated = []
    real_eval = tiny.llm.eval
    tiny.llm.eval = lambda toks: (evaluated.append(len(toks)), real_eval(toks))[1]
    try:
        stream.close()
    finally:
        del tiny.llm.eval
    assert len(got) == 3 and evaluated == []
    assert _gen(tiny, "Hi", max_tokens=2)  # the engine is free again


def test_chat_template_rendered_from_gguf(small):
    text = small.render_chat([{"role": "user", "content": "hi"}])
    assert text.startswith("<|im_start|>system") and text.endswith("<|im_start|>assistant\n")


def test_bad_sampling_params(tiny):
    with pytest.raises(ConfigError, match="max_tokens"):
        tiny.stream("x", SamplingParams(max_tokens=0))
    with pytest.raises(ConfigError, match="temperature"):
        tiny.stream("x", SamplingParams(temperature=-1))


def test_n_samples_are_seeded_and_distinct(tiny):
    p = tiny.render_chat([{"role": "user", "content": "Invent a name for a cat."}])
    outs = tiny.generate(p, SamplingParams(max_tokens=8, temperature=1.2, seed=1), n=3)
    assert len(outs) == 3 and all(o.n_tokens >= 1 for o in outs)
    assert len({o.text for o in outs}) >= 2
    again = tiny.generate(p, SamplingParams(max_tokens=8, temperature=1.2, seed=1), n=3)
    assert [o.text for o in outs] == [o.text for o in again]


def test_interleaved_streams_do_not_corrupt_each_other(tiny):
    """A probe started while another stream is suspended must not change that stream's text."""
    p = tiny.render_chat([{"role": "user", "content": "List the planets of the solar system."}])
    alone = "".join(c.text for c in _gen(tiny, p, max_tokens=24))
    outer = tiny.stream(p, SamplingParams(max_tokens=24))
    text = ""
    for i, c in enumerate(outer):
        text += c.text
        if i == 5:  # run another generation in the middle
            _gen(tiny, "Unrelated prompt about cooking pasta:", max_tokens=5)
    assert text == alone


# -- token text: long pieces and partial characters (issue 14, item 6) --------------------------
DASHES = "-" * 64  # one SmolLM2 token (15069): longer than llama-cpp-python's 32-byte detokenize buffer


def test_tokens_longer_than_32_bytes_keep_their_text(tiny):
    """`Llama.detokenize` returns b"" for such tokens; generated text lost them silently."""
    from leanthink.backends.llamacpp import token_piece

    for text in ["=" * 64, "-" * 80, "class A:\n" + " " * 40 + "pass"]:
        ids = tiny.llm.tokenize(text.encode(), add_bos=False, special=False)
        assert b"".join(token_piece(tiny.llm, i) for i in ids) == text.encode()
    assert token_piece(tiny.llm, 15069) == DASHES.encode()
    p = "Separator lines:\n" + (DASHES + "\n") * 3
    chunks = _gen(tiny, p, max_tokens=12)
    assert [c.token_ids for c in chunks] == [[15069], [198]] * 6  # 198: "\n"
    assert "".join(c.text for c in chunks) == (DASHES + "\n") * 6


def _fake_logits(monkeypatch, tiny, values: dict[int, float]):
    import ctypes
    from types import SimpleNamespace

    import numpy as np

    logits = np.full(tiny.llm.n_vocab(), -40.0, dtype=np.float32)
    for i, v in values.items():
        logits[i] = v
    ptr = logits.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
    monkeypatch.setattr(tiny.llm, "_ctx", SimpleNamespace(get_logits_ith=lambda i: ptr))
    lse = float(np.logaddexp.reduce(logits.astype(np.float64)))
    return {i: float(v) - lse for i, v in values.items()}


def test_top_logprob_keys_are_distinct_and_never_empty(tiny, monkeypatch):
    """A 64-byte token and two partial UTF-8 bytes (111: 0xA1, 112: 0xA2) used to share the
    key "" (one overwriting the others); each now has its own key and exact logprob."""
    want = _fake_logits(monkeypatch, tiny, {15069: 5.0, 111: 4.0, 112: 3.0, 17794: 2.0})
    lp, top = tiny._logprobs(15069, 4)
    assert top == pytest.approx({DASHES: want[15069], "bytes:\\xa1": want[111], "bytes:\\xa2": want[112],
                                 "#" * 64: want[17794]})
    assert list(top) == [DASHES, "bytes:\\xa1", "bytes:\\xa2", "#" * 64]  # most likely first
    assert lp == pytest.approx(want[15069])


def test_top_logprobs_of_tokens_with_the_same_text_add_up(tiny, monkeypatch):
    import math

    from leanthink.backends import llamacpp

    want = _fake_logits(monkeypatch, tiny, {111: 4.0, 112: 3.0, 113: 1.0})
    real = llamacpp.token_piece
    monkeypatch.setattr(llamacpp, "token_piece", lambda llm, t, special=False: b"7" if t in (111, 112) else real(llm, t, special))
    _, top = tiny._logprobs(111, 3)
    assert top == pytest.approx({"7": math.log(math.exp(want[111]) + math.exp(want[112])), "bytes:\\xa3": want[113]})
