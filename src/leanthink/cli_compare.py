"""`leanthink compare DIR_A DIR_B`: two benchmark runs, method by method, paired on common items.

The numbers come from `eval.metrics.paired` (the same flips and McNemar test the reports
use); this module only pairs methods, checks that the runs are comparable, and formats.
A comparison that cannot mean anything is an error (exit 2), not a table with n = 0: runs
on different datasets, or with no (method, item) pair in common.
"""

from __future__ import annotations

from typing import Any

from .errors import ConfigError


def _describe(directory: str, store) -> dict[str, Any]:
    ident = store.get_meta("identity", {}) or {}
    cfg = store.get_meta("config", {}) or {}
    be = store.get_meta("backend", {}) or {}
    return {"dir": directory, "model": ident.get("model") or cfg.get("model") or be.get("model_id") or "?",
            "dataset": ident.get("dataset") or cfg.get("dataset") or "?", "seed": ident.get("seed", cfg.get("seed")),
            "temperature": ident.get("temperature", cfg.get("temperature")), "methods": store.methods()}


def _parse_maps(maps: list[str]) -> list[tuple[str, str]]:
    from .methods.base import _split_top

    pairs = []
    for m in maps:
        parts = _split_top(m, "=")  # `=` inside a spec's parentheses is a parameter, not the separator
        if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
            raise ConfigError(f"--map must be METHOD_A=METHOD_B (e.g. 'budget=budget(max_thinking=256)'), got '{m}'")
        pairs.append((parts[0].strip(), parts[1].strip()))
    return pairs


def compare_runs(dir_a: str, dir_b: str, maps: list[str]) -> dict[str, Any]:
    from .eval.metrics import paired
    from .eval.store import Store

    a, b = Store(dir_a, create=False), Store(dir_b, create=False)
    da, db = _describe(dir_a, a), _describe(dir_b, b)
    if da["dataset"] != db["dataset"]:
        raise ConfigError(f"{dir_a} ran dataset '{da['dataset']}' and {dir_b} ran '{db['dataset']}': a paired "
                          "comparison needs the same items")
    ma, mb = set(da["methods"]), set(db["methods"])
    explicit = _parse_maps(maps)
    for x, y in explicit:
        if x not in ma:
            raise ConfigError(f"--map {x}={y}: {dir_a} has no method '{x}' (it has: {', '.join(sorted(ma)) or 'none'})")
        if y not in mb:
            raise ConfigError(f"--map {x}={y}: {dir_b} has no method '{y}' (it has: {', '.join(sorted(mb)) or 'none'})")
    mapped_a, mapped_b = {x for x, _ in explicit}, {y for _, y in explicit}
    pairs = explicit + [(m, m) for m in sorted(ma & mb) if m not in mapped_a and m not in mapped_b]
    rows = []
    for x, y in pairs:
        p = paired(a.records(x), b.records(y))
        rows.append({"method_a": x, "method_b": y, **p})
    if not rows or not any(r["n"] for r in rows):
        why = ("no method of one run is in the other; pair them with --map A=B "
               f"(A has {', '.join(sorted(ma)) or 'none'}; B has {', '.join(sorted(mb)) or 'none'})") if not rows else \
            "no item was answered by the compared methods in both runs (different items, seeds or --limit)"
        raise ConfigError(f"nothing to compare between {dir_a} and {dir_b}: {why}")
    used_a, used_b = {x for x, _ in pairs}, {y for _, y in pairs}
    return {"a": da, "b": db, "rows": rows,
            "only_in_a": sorted(ma - used_a), "only_in_b": sorted(mb - used_b)}


def render_compare(console, result: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    def pct(x):
        return "–" if x != x else f"{100 * x:.1f}%"

    def num(x):
        return "–" if x != x else f"{x:,.0f}"

    a, b = result["a"], result["b"]
    title = (f"A: {a['dir']} ({a['model']}, {a['dataset']})\n→ B: {b['dir']} ({b['model']}, {b['dataset']})\n"
             "paired on common items")
    t = Table(title=escape(title))
    for col in ("method (A → B)", "n", "accuracy A", "accuracy B", "tokens A", "tokens B", "token ratio", "flips -/+", "McNemar p"):
        t.add_column(col, justify="left" if col.startswith("method") else "right")
    for r in result["rows"]:
        name = r["method_a"] if r["method_a"] == r["method_b"] else f"{r['method_a']} → {r['method_b']}"
        ratio = "–" if r["token_ratio"] != r["token_ratio"] else f"{r['token_ratio']:.2f}×"
        t.add_row(escape(name), str(r["n"]), pct(r["accuracy_a"]), pct(r["accuracy_b"]), num(r["tokens_a"]),
                  num(r["tokens_b"]), ratio, f"{r['right_to_wrong']}/{r['wrong_to_right']}", f"{r['mcnemar_p']:.3g}")
    console.print(t)
    for side in ("a", "b"):
        only = result[f"only_in_{side}"]
        if only:
            console.print(Text(f"only in {side.upper()} (not compared; pair with --map A=B): {', '.join(only)}", style="dim"))
