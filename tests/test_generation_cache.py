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


def test_the_cap_is_not_part_of_the_key_a_smaller_cap_truncates_a_larger_one_reads_on(tmp_path):
    words = [f"w{i}" for i in range(12)]

    def respond(prompt: str) -> str:
        last = prompt.split()[-1]
        start = words.index(last) + 1 if last in words else 0
        return " ".join(words[start:])

    real = ScriptedBackend(respond)
    uncached = list(ScriptedBackend(respond).stream("q", SamplingParams(max_tokens=100)))
    be = CachedBackend(real, GenerationCache(tmp_path / "g.sqlite"))
    short = list(be.stream("q", SamplingParams(max_tokens=4)))
    assert sum(c.n_tokens for c in short) == 4 and short[-1].finish_reason == "length"
    # a larger cap: the 4 stored tokens (no longer marked `length`), then a real continuation of 8 more
    full = list(be.stream("q", SamplingParams(max_tokens=100)))
    assert len(real.calls) == 2 and real.calls[1] == "q" + _text(short)
    assert _text(full).split() == words and _text(full) == _text(uncached)
    assert [c.finish_reason for c in full[:-1]] == [None] * (len(full) - 1) and full[-1].finish_reason == "stop"
    assert be.replayed_tokens == 4 and be.generated_tokens == sum(c.n_tokens for c in full), "each token generated once"
    # a smaller cap within the complete stream: replayed and cut exactly at the cap, marked as the engine would
    mid = list(be.stream("q", SamplingParams(max_tokens=7)))
    assert len(real.calls) == 2
    assert sum(c.n_tokens for c in mid) == 7 and _text(mid) == _text(full[:7]) and mid[-1].finish_reason == "length"
    # a cap exactly at the stream's own end keeps its own finish reason
    exact = list(be.stream("q", SamplingParams(max_tokens=sum(c.n_tokens for c in full))))
    assert exact[-1].finish_reason == "stop" and len(real.calls) == 2


def test_streams_stored_under_the_old_capped_key_still_replay(tmp_path):
    from leanthink.backends.cache import cache_key

    real = ScriptedBackend(lambda p: "x y z")
    cache = GenerationCache(tmp_path / "g.sqlite")
    params = SamplingParams(max_tokens=50, seed=1, temperature=0.7, logprobs=0)
    stored = list(ScriptedBackend(lambda p: "x y z").stream("q", params))
    cache.put(cache_key("scripted-qwen2.5", "q", params, with_cap=True), stored, 1.0, complete=True)
    got = list(CachedBackend(real, cache).stream("q", params))
    assert _text(got) == "x y z" and real.calls == []


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


def test_budget_and_a_longer_chain_share_one_thinking_stream(tmp_path, small):
    """budget's capped thinking is the start of think's: with the cap outside the key, think
    replays budget's tokens and generates only the rest, and still counts every token."""
    be = CachedBackend(small, GenerationCache(tmp_path / "g.sqlite"))
    q = "A shop sells pens at 3 dollars each. Tom buys 7 pens and pays with a 50 dollar bill. How much change does he get?"
    capped = solve(q, method="budget(max_thinking=24)", backend=be)
    assert next(e for e in capped.trace if e.event == "budget").detail["fired"]
    after_budget = be.generated_tokens
    full = solve(q, method="think(max_thinking=400)", backend=be)
    assert be.replayed_tokens >= 24, "think read budget's stored thinking tokens instead of regenerating them"
    assert full.reasoning.startswith(capped.reasoning.strip()[:40])
    assert be.generated_tokens - after_budget < full.usage.total, "only the continuation reached the engine"
    assert full.usage.thinking > 24, "the replayed tokens are counted too"


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
