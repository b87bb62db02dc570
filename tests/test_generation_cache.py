"""The generation cache replays streams exactly and keeps the accounting honest."""

from __future__ import annotations

import json
import sqlite3

from leanthink import solve
from leanthink.backends.base import SamplingParams
from leanthink.backends.cache import CachedBackend, GenerationCache
from leanthink.eval.runner import BenchConfig, run_bench

from .fakes import ScriptedBackend


def _text(chunks) -> str:
    return "".join(c.text for c in chunks)


def test_replays_seeded_and_greedy_streams_but_not_unseeded_samples(tmp_path):
    real = ScriptedBackend(lambda p: "one two three four")
    be = CachedBackend(real, GenerationCache(tmp_path / "g.sqlite"))
    greedy = SamplingParams(max_tokens=50)
    first = list(be.stream("q", greedy))
    assert len(real.calls) == 1
    again = list(be.stream("q", greedy))
    assert len(real.calls) == 1, "a stored stream must not reach the engine again"
    assert _text(again) == _text(first) and [c.finish_reason for c in again] == [c.finish_reason for c in first]
    assert be.replayed_tokens == sum(c.n_tokens for c in first)

    list(be.stream("q", SamplingParams(max_tokens=50, seed=3, temperature=0.7)))
    list(be.stream("q", SamplingParams(max_tokens=50, seed=4, temperature=0.7)))
    assert len(real.calls) == 3, "another seed is another stream"
    list(be.stream("q", SamplingParams(max_tokens=50, temperature=0.7)))
    list(be.stream("q", SamplingParams(max_tokens=50, temperature=0.7)))
    assert len(real.calls) == 5, "unseeded sampling is not deterministic, so it is never cached"
    list(be.stream("other prompt", greedy))
    assert len(real.calls) == 6


def test_a_stream_closed_early_stops_the_engine_and_is_stored_as_a_prefix(tmp_path):
    words = [f"w{i}" for i in range(20)]

    def respond(prompt: str) -> str:  # continues the text after the prompt's last word
        last = prompt.split()[-1]
        start = words.index(last) + 1 if last in words else 0
        return " ".join(words[start:])

    real = ScriptedBackend(respond)
    be = CachedBackend(real, GenerationCache(tmp_path / "g.sqlite"))
    s = be.stream("q", SamplingParams(max_tokens=100))
    got = [next(s) for _ in range(6)]
    s.close()
    assert real.generated == 6, "closing the stream stops the engine"
    assert len(be.cache) == 1
    # a reader that stops within the stored prefix replays it and never reaches the engine
    r = be.stream("q", SamplingParams(max_tokens=100))
    again = [next(r) for _ in range(4)]
    r.close()
    assert [c.text for c in again] == [c.text for c in got[:4]] and len(real.calls) == 1
    # a reader that reads on gets the prefix, then a real continuation from it (one more engine call)
    full = list(be.stream("q", SamplingParams(max_tokens=100)))
    assert len(real.calls) == 2 and real.calls[1] == "q" + _text(got)
    assert _text(full).split() == words
    assert sum(c.n_tokens for c in full) <= 100
    # now it is stored complete: replayed without the engine
    assert _text(be.stream("q", SamplingParams(max_tokens=100))) == _text(full) and len(real.calls) == 2


def test_readers_with_and_without_logprobs_share_one_stream(tmp_path):
    real = ScriptedBackend(lambda p: "a b c")
    be = CachedBackend(real, GenerationCache(tmp_path / "g.sqlite"))
    plain = list(be.stream("q", SamplingParams(max_tokens=10, seed=2, temperature=0.7)))
    scored = list(be.stream("q", SamplingParams(max_tokens=10, seed=2, temperature=0.7, logprobs=0)))
    assert len(real.calls) == 1
    assert all(c.logprob is None for c in plain), "a reader that asked for no logprobs gets none, as uncached"
    assert [c.logprob for c in scored if c.text.strip()] == [-0.01] * 3
    assert _text(plain) == _text(scored)


def test_shared_across_processes_by_file(tmp_path):
    path = tmp_path / "g.sqlite"
    a = CachedBackend(ScriptedBackend(lambda p: "alpha beta"), GenerationCache(path))
    list(a.stream("q", SamplingParams(max_tokens=10, seed=1, temperature=1.0)))
    other_engine = ScriptedBackend(lambda p: "something else entirely")
    b = CachedBackend(other_engine, GenerationCache(path))
    assert _text(b.stream("q", SamplingParams(max_tokens=10, seed=1, temperature=1.0))) == "alpha beta"
    assert other_engine.calls == []


def test_sampling_methods_share_samples_and_still_count_every_token(tmp_path, small):
    """sc then esc on one cached backend: esc draws sc's first samples (paired), spends
    exactly the tokens of the samples it drew, and the engine generates nothing new."""
    be = CachedBackend(small, GenerationCache(tmp_path / "g.sqlite"))
    q = "What is 12 + 30? Put the final answer in \\boxed{}."
    sc = solve(q, method="sc(k=4,max_thinking=48)", backend=be, seed=5)
    gen = be.generated_tokens
    assert gen > 0
    esc = solve(q, method="esc(k=4,window=2,max_thinking=48)", backend=be, seed=5)
    assert be.generated_tokens == gen, "esc's chains are sc's chains"
    sc_tokens = next(e for e in sc.trace if e.event == "samples").detail["tokens"]
    esc_tokens = next(e for e in esc.trace if e.event == "samples").detail["tokens"]
    assert esc_tokens == sc_tokens[: esc.samples]
    assert esc.usage.total == sum(esc_tokens), "replayed samples are counted in full"
    rpc = solve(q, method="rpc(k=4,max_thinking=48)", backend=be, seed=5)
    assert be.generated_tokens == gen, "rpc asks for logprobs, and still replays sc's chains"
    assert next(e for e in rpc.trace if e.event == "samples").detail["tokens"] == sc_tokens
    assert rpc.usage.total == sc.usage.total


def first_item(rows) -> str:
    return sorted(i for _, i in rows)[0]


def _records(out):
    db = sqlite3.connect(out / "results.sqlite")
    rows = {(m, i): json.loads(d) for m, i, d in db.execute("SELECT method, item_id, data FROM records")}
    db.close()
    return rows


def test_bench_rerun_replays_everything_with_the_same_tokens_and_recorded_time(tmp_path, tiny):
    out = tmp_path / "run"
    cfg = BenchConfig(model="smollm2-135m", dataset="builtin", methods=["think(max_thinking=16)", "sc(k=2,max_thinking=16)"],
                      out=str(out), limit=2, oracle=False, generation_cache=True)
    run_bench(cfg, backend=tiny)
    first = _records(out)
    assert (out / "generations.sqlite").exists()
    assert not any(e["event"] == "generation_cache" for e in first["think(max_thinking=16)", first_item(first)]["trace"])
    for f in out.glob("results.sqlite*"):
        f.unlink()
    run_bench(cfg, backend=tiny)
    second = _records(out)
    assert second.keys() == first.keys()
    for key, r in second.items():
        assert r["usage"] == first[key]["usage"] and r["answer"] == first[key]["answer"]
        ev = next(e for e in r["trace"] if e["event"] == "generation_cache")
        assert ev["detail"]["replayed_engine_s"] > 0
        assert r["latency_s"] >= ev["detail"]["replayed_engine_s"]


def test_generation_cache_refuses_concurrency(tmp_path, tiny):
    import pytest

    from leanthink.errors import ConfigError

    cfg = BenchConfig(model="smollm2-135m", dataset="builtin", methods=["think"], out=str(tmp_path / "r"),
                      limit=1, oracle=False, generation_cache=True, concurrency=2)
    with pytest.raises(ConfigError, match="concurrency 1"):
        run_bench(cfg, backend=tiny)
