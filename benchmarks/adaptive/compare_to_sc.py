"""Adaptive sampling vs fixed self-consistency, from a `leanthink bench` results store.

`leanthink report` compares every method with `think`; this script compares them with
the fixed `sc(...)` run instead and adds what the traces know: samples per item, the
routing rate of `route`, the acceptance rate of `spec-reason`, and whether a method
meets the issue's target (accuracy within 0.5 point of sc with <= 40% of its tokens).

    python benchmarks/adaptive/compare_to_sc.py DIR [--sc 'sc(k=8)'] [--markdown]

Reads the store only; no model is loaded.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from leanthink.eval.metrics import bootstrap_ci  # noqa: E402
from leanthink.eval.store import Store  # noqa: E402


def _trace(r: dict, name: str) -> dict | None:
    return next((e.get("detail", {}) for e in r.get("trace", []) if e.get("event") == name), None)


def rows(directory: str, sc_spec: str | None) -> tuple[str, list[dict]]:
    store = Store(directory, create=False)
    by: dict[str, list[dict]] = defaultdict(list)
    for r in store.records():
        by[r["method"]].append(r)
    if sc_spec is None:
        cands = [m for m in by if m == "sc" or m.startswith("sc(")]
        if not cands:
            raise SystemExit(f"no sc(...) method in {directory}; pass --sc SPEC")
        sc_spec = max(cands, key=lambda m: sum(r["usage"]["total"] for r in by[m]))
    sc = {(r["item_id"], r["seed"]): r for r in by[sc_spec]}
    out = []
    for m, rs in sorted(by.items()):
        common = [r for r in rs if (r["item_id"], r["seed"]) in sc]
        n = len(common)
        if not n:
            continue
        acc = sum(r["correct"] for r in common) / n
        sc_acc = sum(sc[(r["item_id"], r["seed"])]["correct"] for r in common) / n
        tok = sum(r["usage"]["total"] for r in common)
        sc_tok = sum(sc[(r["item_id"], r["seed"])]["usage"]["total"] for r in common)
        lo, hi = bootstrap_ci([1.0 if r["correct"] else 0.0 for r in common])
        route = [_trace(r, "route") for r in common]
        spec = [_trace(r, "spec_reason") for r in common]
        routed = [d["escalated"] for d in route if d]
        judged = sum(d["judged"] for d in spec if d)
        accepted = sum(d["accepted"] for d in spec if d)
        out.append({
            "method": m, "n": n, "accuracy": acc, "ci": (lo, hi), "delta_vs_sc": acc - sc_acc,
            "samples": sum(r.get("samples", 1) for r in common) / n, "tokens": tok / n,
            "token_ratio": tok / sc_tok if sc_tok else float("nan"),
            "wall_s": sum(r["latency_s"] for r in common),
            "routing_rate": sum(routed) / len(routed) if routed else None,
            "acceptance_rate": accepted / judged if judged else None,
            "target": m != sc_spec and acc - sc_acc >= -0.005 and sc_tok and tok / sc_tok <= 0.40,
        })
    return sc_spec, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("directory")
    ap.add_argument("--sc", default=None, help="The fixed-k baseline's method spec (default: the sc(...) run with the most tokens).")
    ap.add_argument("--markdown", action="store_true", help="Print a markdown table.")
    a = ap.parse_args()
    sc_spec, rs = rows(a.directory, a.sc)
    cols = ["method", "n", "accuracy (95% CI)", "Δ vs sc", "samples/item", "tokens/item", "tokens vs sc", "wall s", "routed", "accepted", "target"]

    def fmt(r):
        lo, hi = r["ci"]
        return [r["method"], str(r["n"]), f"{100 * r['accuracy']:.1f}% ({100 * lo:.0f}–{100 * hi:.0f})",
                f"{100 * r['delta_vs_sc']:+.1f}", f"{r['samples']:.2f}", f"{r['tokens']:,.0f}", f"{r['token_ratio']:.2f}×",
                f"{r['wall_s']:,.0f}", "–" if r["routing_rate"] is None else f"{100 * r['routing_rate']:.0f}%",
                "–" if r["acceptance_rate"] is None else f"{100 * r['acceptance_rate']:.0f}%", "yes" if r["target"] else ""]

    table = [fmt(r) for r in rs]
    print(f"baseline: {sc_spec}")
    if a.markdown:
        print("| " + " | ".join(cols) + " |")
        print("|" + "|".join("---" for _ in cols) + "|")
        for t in table:
            print("| " + " | ".join(t) + " |")
        return
    widths = [max(len(c), *(len(t[i]) for t in table)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for t in table:
        print("  ".join(v.ljust(w) for v, w in zip(t, widths)))


if __name__ == "__main__":
    main()
