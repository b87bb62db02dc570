"""Metrics computed from stored records only (so reports can be rebuilt at any time).

Accuracy comes with a 95% bootstrap CI; the comparison with the baseline is paired on
the items both methods answered (flips in each direction and an exact McNemar p-value),
which is far more sensitive than comparing two independent accuracies.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np

PHASES = ("thinking", "answer", "forced", "overhead", "total")


def bootstrap_ci(values: list[float], *, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean."""
    if not values:
        return (float("nan"), float("nan"))
    arr = np.asarray(values, dtype=float)
    if len(arr) == 1:
        return (float(arr[0]), float(arr[0]))
    rng = np.random.default_rng(seed)
    means = arr[rng.integers(0, len(arr), size=(n_boot, len(arr)))].mean(axis=1)
    a = (1 - level) / 2
    return (float(np.quantile(means, a)), float(np.quantile(means, 1 - a)))


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar test: b = right->wrong flips, c = wrong->right flips."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def _dist(values: list[float]) -> dict[str, float]:
    if not values:
        return {"mean": float("nan"), "median": float("nan"), "p90": float("nan")}
    arr = np.asarray(values, dtype=float)
    return {"mean": float(arr.mean()), "median": float(np.median(arr)), "p90": float(np.quantile(arr, 0.9))}


def _key(r: dict) -> tuple[str, int]:
    return (r["item_id"], r["seed"])


def method_metrics(records: list[dict], baseline: list[dict] | None = None) -> dict[str, Any]:
    n = len(records)
    correct = [1.0 if r["correct"] else 0.0 for r in records]
    acc = float(np.mean(correct)) if n else float("nan")
    lo, hi = bootstrap_ci(correct)
    usage = {p: _dist([r["usage"][p] for r in records]) for p in PHASES}
    lat = [r["latency_s"] for r in records]
    total_tokens = sum(r["usage"]["total"] for r in records)
    total_time = sum(lat)
    out: dict[str, Any] = {
        "n": n,
        "accuracy": acc,
        "accuracy_ci": [lo, hi],
        "tokens": usage,
        "latency_s": {"mean": float(np.mean(lat)) if lat else float("nan"),
                      "p50": float(np.median(lat)) if lat else float("nan"),
                      "p90": float(np.quantile(lat, 0.9)) if lat else float("nan")},
        "throughput_tok_s": total_tokens / total_time if total_time > 0 else float("nan"),
        "items_per_min": 60 * n / total_time if total_time > 0 else float("nan"),
        "accuracy_per_1k_tokens": (1000 * acc / usage["total"]["mean"]) if n and usage["total"]["mean"] > 0 else float("nan"),
        "finish_reasons": dict(Counter(r.get("finish_reason", "?") for r in records)),
        "errors": sum(1 for r in records if r.get("error")),
        # The grader failed on these answers (counted as not correct, but never judged): a
        # non-zero count means the accuracy above is a lower bound, not a measurement.
        "grade_errors": sum(1 for r in records if r.get("grade_error")),
        "samples_per_item": float(np.mean([r.get("samples", 1) for r in records])) if n else float("nan"),
    }
    if baseline is not None:
        p = paired(baseline, records)
        out["vs_baseline"] = {
            "n_common": p["n"],
            "accuracy_delta": p["accuracy_b"] - p["accuracy_a"] if p["n"] else float("nan"),
            "right_to_wrong": p["right_to_wrong"],
            "wrong_to_right": p["wrong_to_right"],
            "mcnemar_p": p["mcnemar_p"],
            "token_ratio": p["token_ratio"],
        }
    return out


def paired(a: list[dict], b: list[dict]) -> dict[str, Any]:
    """Paired comparison of two runs on their common (item, seed) pairs: accuracies, mean
    total tokens, flips (right→wrong, wrong→right going from A to B) and the exact McNemar
    p-value. Used by reports (a method vs the baseline) and `leanthink compare` (run vs run)."""
    base = {_key(r): r for r in a}
    common = [(base[_key(r)], r) for r in b if _key(r) in base]
    n = len(common)
    lost = sum(1 for ra, rb in common if ra["correct"] and not rb["correct"])
    won = sum(1 for ra, rb in common if not ra["correct"] and rb["correct"])
    tok_a = sum(ra["usage"]["total"] for ra, _ in common)
    tok_b = sum(rb["usage"]["total"] for _, rb in common)
    nan = float("nan")
    return {
        "n": n,
        "accuracy_a": sum(bool(ra["correct"]) for ra, _ in common) / n if n else nan,
        "accuracy_b": sum(bool(rb["correct"]) for _, rb in common) / n if n else nan,
        "tokens_a": tok_a / n if n else nan,
        "tokens_b": tok_b / n if n else nan,
        "token_ratio": tok_b / tok_a if tok_a else nan,
        "right_to_wrong": lost,
        "wrong_to_right": won,
        "mcnemar_p": mcnemar_exact(lost, won),
    }


def oracle_metrics(oracle: list[dict], baseline: list[dict]) -> dict[str, Any]:
    """Summarise the oracle early-exit analysis of the baseline's chains."""
    if not oracle:
        return {}
    base = {_key(r): r for r in baseline}
    rows = [o for o in oracle if _key(o) in base]
    n = len(rows)
    pearls = [o for o in rows if o["pearl_tokens"] is not None]
    oracle_tokens = [o["oracle_tokens"] for o in rows]
    base_tokens = [base[_key(o)]["usage"]["total"] for o in rows]
    rel = [o["pearl_thinking_tokens"] / o["thinking_tokens"] for o in pearls if o["thinking_tokens"]]
    return {
        "n": n,
        "share_with_pearl": len(pearls) / n if n else float("nan"),
        "oracle_accuracy": len(pearls) / n if n else float("nan"),
        "baseline_accuracy": sum(1 for o in rows if base[_key(o)]["correct"]) / n if n else float("nan"),
        "oracle_tokens_mean": float(np.mean(oracle_tokens)) if n else float("nan"),
        "baseline_tokens_mean": float(np.mean(base_tokens)) if n else float("nan"),
        "oracle_vs_baseline": (sum(oracle_tokens) / sum(base_tokens)) if sum(base_tokens) else float("nan"),
        "pearl_position_mean": float(np.mean(rel)) if rel else float("nan"),
        "probes_total": sum(o["probes"] for o in rows),
        "probe_tokens_total": sum(o["probe_tokens"] for o in rows),
        "rescued": sum(1 for o in pearls if not base[_key(o)]["correct"]),
    }


def pareto_front(points: dict[str, tuple[float, float]]) -> list[str]:
    """Methods not dominated by another (fewer-or-equal tokens and higher-or-equal accuracy)."""
    front = []
    for m, (t, a) in points.items():
        dominated = any(
            (t2 <= t and a2 >= a) and (t2 < t or a2 > a) for m2, (t2, a2) in points.items() if m2 != m
        )
        if not dominated and not (math.isnan(t) or math.isnan(a)):
            front.append(m)
    return sorted(front, key=lambda m: points[m][0])


def summarize(records: list[dict], *, oracle: list[dict] | None = None, baseline: str = "think") -> dict[str, Any]:
    by_method: dict[str, list[dict]] = {}
    for r in records:
        by_method.setdefault(r["method"], []).append(r)
    base = by_method.get(baseline)
    methods = {m: method_metrics(rs, base if m != baseline else None) for m, rs in by_method.items()}
    orc = oracle_metrics(oracle or [], base or []) if base else {}
    if orc:
        oracle_by_item = {_key(o): o["oracle_tokens"] for o in oracle or []}
        for m, rs in by_method.items():
            common = [r for r in rs if _key(r) in oracle_by_item]
            ot = sum(oracle_by_item[_key(r)] for r in common)
            methods[m]["token_ratio_vs_oracle"] = (sum(r["usage"]["total"] for r in common) / ot) if ot else float("nan")
    points = {m: (v["tokens"]["total"]["mean"], v["accuracy"]) for m, v in methods.items()}
    return {"baseline": baseline if base else None, "methods": methods, "oracle": orc, "pareto": pareto_front(points),
            "grade_errors": sum(v["grade_errors"] for v in methods.values())}
