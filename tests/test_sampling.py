"""Sampling methods against a real model (Qwen2.5-Coder-0.5B on llama.cpp): each mechanism fires.

Budgets are tiny (a few thinking tokens per chain) so the file runs in about a minute on
2 busy cores. Many samples use `nothink(max_answer=...)` as the inner method: one short
sampled stream per chain, and the prompt is cached across samples, so a sample costs a
few decode steps. The real-model facts used: "What is 2+3?" gets "5" from every chain; a
large product is beyond the 0.5B model, so its sampled answers scatter.
"""

from __future__ import annotations

import threading

import pytest

from leanthink import solve
from leanthink.api import resolve_method
from leanthink.errors import ConfigError
from leanthink.methods import get_method
from leanthink.methods.sampling import (
    SCORERS, Sample, Votes, beta_settled, dirichlet_settled, low_cluster, register_scorer,
)
from leanthink.result import Result

EASY = "What is 2+3?"
HARD = "What is 3847 * 2963?"
CHEAP = "inner=nothink(max_answer=16)"


def event(r, name):
    return next(e for e in r.trace if e.event == name)


# --------------------------------------------------------------------------- pure parts


def test_stopping_rules_and_grouping():
    # Beta(top+1, rest+1): unanimous 3 -> 15/16, unanimous 4 -> 31/32, a split is never settled
    assert beta_settled(3, 0) == pytest.approx(0.9375)
    assert beta_settled(4, 0) == pytest.approx(0.96875)
    assert beta_settled(2, 2) < 0.5 + 1e-9
    assert dirichlet_settled([4]) == pytest.approx(beta_settled(4, 0), abs=0.01)
    assert dirichlet_settled([3, 3]) < 0.6 < dirichlet_settled([6, 1, 1])
    assert low_cluster([0.9, 0.91, 0.2, 0.88]) == [2]
    assert low_cluster([0.5, 0.5, 0.5]) == []

    def s(i, a):
        return Sample(i, i, result=Result(question="q", method="m", answer=a))

    v = Votes([s(0, "5"), s(1, "5.0"), s(2, "\\frac{10}{2}"), s(3, "7"), s(4, None)])
    assert v.table() == {"5": 3, "7": 1, "(none)": 1}  # equivalence-aware grouping


def test_budget_flag_sets_the_per_sample_cap():
    m = resolve_method("sc(k=2)", budget=32)
    assert m.params.max_thinking == 32 and m.inner.params.max_thinking == 32
    # an inner spec that sets its own cap keeps it
    assert get_method("sc(inner=budget(max_thinking=9),max_thinking=50)").inner.params.max_thinking == 9
    assert get_method("adaptive-sc(inner=deer)").inner.params.max_thinking == 1024


# --------------------------------------------------------------------------- real model


def test_sc_majority_vote_on_easy_item(small):
    r = solve(EASY, method="sc(k=3,max_thinking=8)", backend=small)
    assert r.answer == "5" and r.samples == 3
    samples = event(r, "samples")
    assert samples.detail["answers"] == ["5", "5", "5"]
    assert event(r, "stop").detail["votes"] == {"5": 3}
    # the chosen chain's tokens are the result; the two others are overhead
    chosen = samples.detail["chosen"]
    others = sum(t for i, t in enumerate(samples.detail["tokens"]) if i != chosen)
    assert r.usage.overhead == others
    assert r.usage.thinking <= 8 and r.usage.total == sum(samples.detail["tokens"])


def test_dsc_rating_asks_the_model_for_a_difficulty(small):
    r = solve(EASY, method=f"dsc(k=4,difficulty=rating,{CHEAP})", backend=small)
    d = event(r, "difficulty").detail
    assert 1 <= d["rating"] <= 9 and 1 <= d["allocated"] <= 4
    assert r.samples == d["allocated"] and r.answer == "5"
    tokens = event(r, "samples").detail["tokens"]
    assert r.usage.overhead == sum(tokens) - tokens[event(r, "samples").detail["chosen"]] + 1  # + the rating token


ADAPTIVE = {
    "adaptive-sc": f"adaptive-sc(k=6,{CHEAP})",
    "adaptive-sc-dirichlet": f"adaptive-sc(k=6,criterion=dirichlet,{CHEAP})",
    "esc": f"esc(k=6,window=2,{CHEAP})",
    "dsc": f"dsc(k=6,pre=2,{CHEAP})",
}


@pytest.fixture(scope="module")
def adaptive_runs(small):
    """Every adaptive method on the easy item, then on the hard one (one prompt switch)."""
    out = {}
    for q in (EASY, HARD):
        for name, spec in ADAPTIVE.items():
            out[name, q] = solve(q, method=spec, backend=small)
    return out


@pytest.mark.parametrize("name", list(ADAPTIVE))
def test_adaptive_methods_sample_less_on_easy_items(adaptive_runs, name):
    easy, hard = adaptive_runs[name, EASY], adaptive_runs[name, HARD]
    assert easy.answer == "5"
    assert easy.samples < hard.samples, (easy.samples, hard.samples, [e.describe() for e in hard.trace])
    assert easy.usage.total < hard.usage.total
    stop = event(easy, "stop")
    assert stop.detail["early"] is True and stop.detail["samples"] == easy.samples
    assert len(event(hard, "samples").detail["answers"]) == hard.samples
    if name.startswith("adaptive-sc"):
        assert stop.detail["p_settled"] >= 0.95 and "P(settled)" in stop.detail["why"]
        assert event(hard, "stop").detail["p_settled"] < 0.95
    if name == "dsc":
        assert event(easy, "difficulty").detail["allocated"] == 2
        assert event(hard, "difficulty").detail["allocated"] > 2


def test_bon_rpc_bom_score_chains_by_probability(small):
    bon = solve(HARD, method=f"bon(k=3,{CHEAP})", backend=small)
    scores = event(bon, "samples").detail["scores"]
    assert len(scores) == 3 and all(s < 0 for s in scores)  # mean logprobs
    assert event(bon, "samples").detail["chosen"] == max(range(3), key=lambda i: scores[i])
    assert bon.samples == 3 and bon.usage.overhead > 0

    rpc = solve(HARD, method=f"rpc(k=3,{CHEAP})", backend=small)
    stop = event(rpc, "stop")
    assert stop.detail["answer_scores"] and all(0 < v <= 3 for v in stop.detail["answer_scores"].values())
    assert len(stop.detail["pruned"]) <= 1  # min_keep=0.5 of 3 chains
    assert rpc.answer in stop.detail["answer_scores"]

    bom = solve(HARD, method=f"bom(k=3,min_share=1.0,{CHEAP})", backend=small)
    stop = event(bom, "stop")
    top = max(stop.detail["votes"].values())
    kept = stop.detail["kept"]
    assert kept and all(stop.detail["votes"][a] == top for a in kept) and bom.answer in kept


def test_bon_with_a_registered_scorer(small):
    seen = []

    def shortest(task, sample):
        seen.append(sample.index)
        return -sample.length, 1  # one token spent per call, counted as overhead

    register_scorer("test-shortest", shortest)
    try:
        r = solve(HARD, method=f"bon(k=2,scorer=test-shortest,{CHEAP})", backend=small)
    finally:
        SCORERS.pop("test-shortest")
    assert seen == [0, 1]
    tokens = event(r, "samples").detail["tokens"]
    chosen = event(r, "samples").detail["chosen"]
    assert r.usage.overhead == tokens[1 - chosen] + 2


def test_short_m_at_k_cancels_in_flight_generation(small, monkeypatch):
    """k=3 chains interleaved 8 tokens at a time; when the first finishes, the other two
    streams are closed mid-generation and their tokens are overhead."""
    streams = []
    real = small.stream

    def counting(prompt, params):
        rec = {"seed": params.seed, "sampled": params.temperature > 0, "max": params.max_tokens,
               "tokens": 0, "finished": False, "closed": False, "thread": threading.current_thread().name}
        streams.append(rec)
        inner = real(prompt, params)

        def gen():
            try:
                for c in inner:
                    rec["tokens"] += c.n_tokens
                    rec["finished"] = rec["finished"] or c.finish_reason is not None
                    yield c
            finally:
                rec["closed"] = True
                inner.close()

        return gen()

    monkeypatch.setattr(small, "stream", counting)
    r = solve(HARD, method="short-m@k(k=3,m=1,quantum=8,inner=nothink(max_answer=40))", backend=small, seed=10)
    monkeypatch.undo()

    ev = event(r, "short_m_at_k")
    assert r.samples == 3 and ev.detail["mode"] == "round-robin"
    assert len(ev.detail["voters"]) == 1 and len(ev.detail["cancelled"]) == 2
    by_sample = {rec["seed"] - 10: rec for rec in streams if rec["sampled"]}
    assert set(by_sample) == {0, 1, 2}  # all three chains were started
    winner = by_sample[ev.detail["voters"][0]]
    assert winner["finished"]
    for i in ev.detail["cancelled"]:
        rec = by_sample[i]
        # in flight when cancelled: it had produced tokens, never reached its end, and was closed
        assert rec["tokens"] > 0 and not rec["finished"] and rec["closed"], rec
        assert rec["tokens"] < rec["max"]
    cancelled_tokens = sum(by_sample[i]["tokens"] for i in ev.detail["cancelled"])
    assert ev.detail["cancelled_tokens"] == cancelled_tokens
    assert r.usage.overhead == cancelled_tokens  # m=1: nothing else is discarded
    assert all(rec["closed"] for rec in streams)
    assert {rec["thread"] for rec in streams} == {"leanthink-engine_0"}  # one engine thread drives the model
    # generation really stopped: every token the engine produced is accounted for
    assert sum(rec["tokens"] for rec in streams) == r.usage.thinking + r.usage.answer + r.usage.overhead


def test_each_sample_runs_the_inner_method(small):
    r = solve(EASY, method="sc(k=2,inner=budget(max_thinking=6))", backend=small)
    assert r.samples == 2 and r.usage.thinking <= 6
    assert any(e.event == "budget" for e in r.trace)  # the inner method's own trace


def test_short_m_at_k_votes_among_the_first_m(small):
    r = solve(EASY, method="short-m@k(k=3,m=2,quantum=8,max_thinking=6)", backend=small)
    ev = event(r, "short_m_at_k")
    assert len(ev.detail["voters"]) == 2 and ev.detail["voters"] == ev.detail["finished_order"][:2]
    assert r.answer == "5" and r.samples == 3


@pytest.mark.parametrize(
    "spec",
    [
        "sc(k=0)",
        "sc(k=65)",
        "sc(temperature=0)",
        "sc(max_thinking=0)",
        "sc(inner=sc)",
        "sc(inner=route)",
        "sc(inner=nosuch)",
        "sc(inner=deer(threshold=2))",
        "sc(kk=3)",
        "bon(scorer=nosuch)",
        "bom(min_share=0)",
        "bom(scorer=nosuch)",
        "adaptive-sc(threshold=0.5)",
        "adaptive-sc(threshold=1)",
        "adaptive-sc(criterion=gamma)",
        "adaptive-sc(min_samples=9,k=4)",
        "adaptive-sc(batch=0)",
        "esc(window=1)",
        "esc(window=6,k=4)",
        "dsc(k=1)",
        "dsc(pre=5,k=4)",
        "dsc(difficulty=vibes)",
        "rpc(min_keep=0)",
        "rpc(min_keep=1.5)",
        "short-m@k(m=0)",
        "short-m@k(m=4,k=3)",
        "short-m@k(quantum=0)",
        "sc+chain-of-draft",
    ],
)
def test_bad_parameters(spec):
    with pytest.raises(ConfigError):
        get_method(spec)
