"""Rich tables the CLI prints from what the library returns: a bench summary
(`eval.report`'s summary.json) and a run comparison (`eval.compare.compare_runs`)."""

from __future__ import annotations

from typing import Any


def _fmt_pct(x) -> str:
    return "–" if x is None or x != x else f"{100 * x:.1f}%"


def _fmt_num(x, nd=0) -> str:
    return "–" if x is None or x != x else f"{x:,.{nd}f}"


def _ratio(x) -> str:
    return "–" if x is None or x != x else f"{x:.2f}×"


def summary_table(console, summary: dict, title: str) -> None:
    """The bench summary: one row per method (accuracy with CI, tokens, ratios, flips), then the oracle line."""
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=escape(title))
    for col in ("method", "n", "accuracy (95% CI)", "mean tokens", "vs baseline", "vs oracle", "flips -/+", "p50 s"):
        t.add_column(col, justify="right" if col != "method" else "left")
    for m, v in summary["methods"].items():
        vb = v.get("vs_baseline") or {}
        lo, hi = v["accuracy_ci"]
        t.add_row(
            escape(m) + (" *" if m in summary.get("pareto", []) else ""), str(v["n"]),
            f"{_fmt_pct(v['accuracy'])} ({_fmt_pct(lo)}–{_fmt_pct(hi)})", _fmt_num(v["tokens"]["total"]["mean"]),
            _ratio(vb.get("token_ratio")) if vb else "baseline", _ratio(v.get("token_ratio_vs_oracle")),
            f"{vb['right_to_wrong']}/{vb['wrong_to_right']}" if vb else "–", _fmt_num(v["latency_s"]["p50"], 1),
        )
    console.print(t)
    o = summary.get("oracle") or {}
    if o:
        console.print(
            f"oracle early exit: {_fmt_pct(o['share_with_pearl'])} of {o['n']} items have a pearl point; "
            f"oracle mean {_fmt_num(o['oracle_tokens_mean'])} tokens vs baseline {_fmt_num(o['baseline_tokens_mean'])} "
            f"({_ratio(o.get('oracle_vs_baseline'))}); pearl at {_fmt_pct(o['pearl_position_mean'])} of the chain on average"
        )
    console.print("[dim]* on the Pareto frontier (accuracy vs mean total tokens incl. overhead)[/]")
    if summary.get("grade_errors"):
        console.print(f"[yellow]grading errors: the grader failed on {summary['grade_errors']} answer(s), counted as "
                      "not correct: those accuracies are lower bounds (see the report's items)[/]")


def render_compare(console, result: dict[str, Any]) -> None:
    """One row per method pair: accuracies, tokens, token ratio, flips and McNemar p."""
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    a, b = result["a"], result["b"]
    title = (f"A: {a['dir']} ({a['model']}, {a['dataset']})\n→ B: {b['dir']} ({b['model']}, {b['dataset']})\n"
             "paired on common items")
    t = Table(title=escape(title))
    for col in ("method (A → B)", "n", "accuracy A", "accuracy B", "tokens A", "tokens B", "token ratio", "flips -/+", "McNemar p"):
        t.add_column(col, justify="left" if col.startswith("method") else "right")
    for r in result["rows"]:
        name = r["method_a"] if r["method_a"] == r["method_b"] else f"{r['method_a']} → {r['method_b']}"
        t.add_row(escape(name), str(r["n"]), _fmt_pct(r["accuracy_a"]), _fmt_pct(r["accuracy_b"]), _fmt_num(r["tokens_a"]),
                  _fmt_num(r["tokens_b"]), _ratio(r["token_ratio"]), f"{r['right_to_wrong']}/{r['wrong_to_right']}", f"{r['mcnemar_p']:.3g}")
    console.print(t)
    for side in ("a", "b"):
        only = result[f"only_in_{side}"]
        if only:
            console.print(Text(f"only in {side.upper()} (not compared; pair with --map A=B): {', '.join(only)}", style="dim"))
