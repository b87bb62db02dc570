"""Cost views beyond tokens: accuracy against wall time and against peak context.

Why: a latent-reasoning method (Coconut, CODI, SoftCoT) spends forward passes that write no
token, and LightThinker writes as many tokens as CoT but holds far fewer in the KV cache. A
Pareto view by generated tokens alone would call the first free and miss the second's gain,
so these views put each method's accuracy next to its wall time and its peak context, with
the tokens and the latent steps beside them.

Inputs are stored bench records (dicts, `Result.model_dump()` plus grading), grouped by a
label (usually the method spec; across several stores, e.g. one checkpoint per method,
`rows_from_stores` labels them). Records written before `peak_context` existed, or by methods
that do not measure it, get an estimate: prompt + every token on the output side (exact for a
single chain that never drops its cache), marked `peak_estimated`.

For `report.py` (not edited here): `rows = summary_rows(by_label)`; `pareto_table(rows)` gives
markdown lines; `pareto_figure(rows)` a PNG (base64) with both views side by side.
"""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path
from typing import Any

from .metrics import bootstrap_ci, pareto_front


def peak_of(r: dict) -> tuple[float, bool]:
    """(peak context of a record, whether it was estimated)."""
    peak = r.get("peak_context")
    if isinstance(peak, (int, float)):
        return float(peak), False
    u = r.get("usage") or {}
    return float(u.get("prompt", 0) + u.get("total", 0)), True


def summary_rows(by_label: dict[str, list[dict]]) -> list[dict[str, Any]]:
    """One row per label: accuracy (95% bootstrap CI), mean generated tokens, latent steps,
    peak context and wall time."""
    rows = []
    for label, recs in by_label.items():
        if not recs:
            continue
        acc = [1.0 if r.get("correct") else 0.0 for r in recs]
        lo, hi = bootstrap_ci(acc)
        peaks = [peak_of(r) for r in recs]
        usage = [r.get("usage") or {} for r in recs]
        rows.append({
            "label": label, "n": len(recs), "accuracy": sum(acc) / len(acc), "ci": (lo, hi),
            "tokens": _mean(u.get("total", 0) for u in usage),
            "latent": _mean(u.get("latent", 0) for u in usage),
            "peak_context": _mean(p for p, _ in peaks), "peak_max": max(p for p, _ in peaks),
            "peak_estimated": any(est for _, est in peaks),
            "wall_s": _mean(r.get("latency_s", 0.0) for r in recs),
        })
    return rows


def _mean(values) -> float:
    vals = list(values)
    return sum(vals) / len(vals) if vals else float("nan")


def fronts(rows: list[dict]) -> dict[str, list[str]]:
    """Labels on the Pareto front (higher accuracy, lower cost) by each cost."""
    return {cost: pareto_front({r["label"]: (r[cost], r["accuracy"]) for r in rows})
            for cost in ("tokens", "wall_s", "peak_context")}


def pareto_table(rows: list[dict]) -> list[str]:
    """Markdown: one line per row; `*` marks the Pareto front of that column's cost."""
    fr = fronts(rows)
    head = ["method", "n", "accuracy (95% CI)", "generated tokens", "latent steps", "peak context", "wall s/item"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        star = {c: " *" if r["label"] in fr[c] else "" for c in fr}
        lo, hi = r["ci"]
        out.append("| " + " | ".join([
            r["label"], str(r["n"]), f"{100 * r['accuracy']:.1f}% ({100 * lo:.0f}-{100 * hi:.0f})",
            f"{r['tokens']:.1f}{star['tokens']}", f"{r['latent']:.1f}",
            f"{r['peak_context']:.1f}{'~' if r['peak_estimated'] else ''}{star['peak_context']}",
            f"{r['wall_s']:.2f}{star['wall_s']}"]) + " |")
    out.append("")
    out.append("`*`: on the Pareto front for that cost (no other row is as accurate and cheaper). "
               "`~`: peak context estimated as prompt + output tokens (the method does not measure it).")
    return out


def pareto_figure(rows: list[dict]) -> str:
    """Two panels (accuracy vs wall time, accuracy vs peak context) as a base64 PNG."""
    from ..errors import require

    require("matplotlib", "plots", "the Pareto figures")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    fr = fronts(rows)
    for ax, cost, name in zip(fig.subplots(1, 2), ("wall_s", "peak_context"), ("wall time per item (s)", "peak context (positions in KV cache)")):
        for r in rows:
            lo, hi = r["ci"]
            ax.errorbar(r[cost], 100 * r["accuracy"], yerr=[[100 * (r["accuracy"] - lo)], [100 * (hi - r["accuracy"])]],
                        fmt="o" if r["label"] in fr[cost] else "x", capsize=3)
            ax.annotate(r["label"], (r[cost], 100 * r["accuracy"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
        front = sorted((r for r in rows if r["label"] in fr[cost]), key=lambda r: r[cost])
        ax.plot([r[cost] for r in front], [100 * r["accuracy"] for r in front], "--", color="grey")
        ax.set_xlabel(name)
        ax.set_ylabel("accuracy (%)")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def rows_from_stores(stores: dict[str, str | Path]) -> list[dict[str, Any]]:
    """Summary rows across several bench directories ({label: directory}), e.g. one checkpoint
    per method; each directory's records of all its methods are pooled under the label."""
    from .store import Store

    by_label: dict[str, list[dict]] = {}
    for label, d in stores.items():
        st = Store(d, create=False)
        try:
            by_label[label] = [r for r in st.records() if not math.isnan(float(r.get("latency_s", 0.0)))]
        finally:
            st.close()
    return summary_rows(by_label)
