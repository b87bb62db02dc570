"""Metrics on hand-made records, checked against values computed by hand."""

import math

import pytest

from leanthink.eval.metrics import bootstrap_ci, mcnemar_exact, pareto_front, summarize


def rec(method, i, correct, total, thinking=None, seed=0, latency=1.0, overhead=0):
    thinking = total - overhead if thinking is None else thinking
    return {"method": method, "item_id": f"x/{i}", "seed": seed, "correct": correct, "latency_s": latency,
            "usage": {"prompt": 10, "thinking": thinking, "answer": 0, "forced": 0, "overhead": overhead, "total": total},
            "finish_reason": "stop", "error": None, "samples": 1}


def test_mcnemar_exact_values():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)
    assert mcnemar_exact(1, 4) == pytest.approx(2 * 6 / 32)
    assert mcnemar_exact(3, 3) == 1.0


def test_bootstrap_ci_brackets_the_mean():
    vals = [1.0] * 30 + [0.0] * 70
    lo, hi = bootstrap_ci(vals)
    assert lo < 0.3 < hi
    assert 0.18 < lo < 0.25 and 0.35 < hi < 0.42  # ~ normal approx 0.3 ± 0.09
    assert bootstrap_ci([1.0]) == (1.0, 1.0)
    assert all(math.isnan(x) for x in bootstrap_ci([]))


def test_summary_paired_comparison_and_ratios():
    base = [rec("think", i, c, 100) for i, c in enumerate([1, 1, 1, 0, 0])]
    fast = [rec("budget", i, c, 40, overhead=10) for i, c in enumerate([1, 0, 1, 1, 0])]
    s = summarize(base + fast)
    t, b = s["methods"]["think"], s["methods"]["budget"]
    assert t["accuracy"] == pytest.approx(0.6) and b["accuracy"] == pytest.approx(0.6)
    assert b["tokens"]["total"]["mean"] == 40 and b["tokens"]["overhead"]["mean"] == 10
    vb = b["vs_baseline"]
    assert (vb["right_to_wrong"], vb["wrong_to_right"], vb["n_common"]) == (1, 1, 5)
    assert vb["token_ratio"] == pytest.approx(0.4)
    assert vb["mcnemar_p"] == 1.0
    assert b["accuracy_per_1k_tokens"] == pytest.approx(15.0)
    assert "vs_baseline" not in t
    assert s["pareto"] == ["budget"]  # same accuracy, fewer tokens dominates


def test_paired_comparison_only_uses_common_items():
    base = [rec("think", i, 1, 100) for i in range(4)]
    other = [rec("direct", i, 0, 10) for i in range(2)] + [rec("direct", 9, 1, 10)]
    vb = summarize(base + other)["methods"]["direct"]["vs_baseline"]
    assert vb["n_common"] == 2 and vb["right_to_wrong"] == 2 and vb["token_ratio"] == pytest.approx(0.1)


def test_oracle_metrics_and_ratio_vs_oracle():
    base = [rec("think", 0, 1, 200), rec("think", 1, 0, 300)]
    oracle = [
        {"item_id": "x/0", "seed": 0, "pearl_tokens": 50, "pearl_thinking_tokens": 40, "thinking_tokens": 200,
         "oracle_tokens": 50, "probes": 3, "probe_tokens": 30},
        {"item_id": "x/1", "seed": 0, "pearl_tokens": None, "pearl_thinking_tokens": None, "thinking_tokens": 300,
         "oracle_tokens": 300, "probes": 8, "probe_tokens": 80},
    ]
    s = summarize(base + [rec("exit", 0, 1, 70), rec("exit", 1, 0, 280)], oracle=oracle)
    o = s["oracle"]
    assert o["share_with_pearl"] == 0.5 and o["oracle_tokens_mean"] == 175
    assert o["oracle_vs_baseline"] == pytest.approx(350 / 500)
    assert o["pearl_position_mean"] == pytest.approx(0.2)
    assert s["methods"]["exit"]["token_ratio_vs_oracle"] == pytest.approx(350 / 350)
    assert s["methods"]["think"]["token_ratio_vs_oracle"] == pytest.approx(500 / 350)


def test_pareto_front():
    pts = {"a": (100, 0.8), "b": (50, 0.7), "c": (120, 0.75), "d": (50, 0.6)}
    assert pareto_front(pts) == ["b", "a"]
