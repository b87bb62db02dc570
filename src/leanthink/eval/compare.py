"""Two benchmark runs compared method by method, paired on their common items.

The numbers come from `metrics.paired` (the same flips and exact McNemar test the reports
use); this module pairs methods, checks that the runs are comparable, and returns plain
data (`leanthink compare` formats it). A comparison that cannot mean anything is a
`ConfigError`, not a table with n = 0: runs on different datasets, or with no
(method, item) pair in common.
"""

from __future__ import annotations

from contextlib import closing
from typing import Any

from ..errors import ConfigError
from .metrics import paired
from .store import Store


def _describe(directory: str, store) -> dict[str, Any]:
    ident = store.get_meta("identity", {}) or {}
    cfg = store.get_meta("config", {}) or {}
    be = store.get_meta("backend", {}) or {}
    return {"dir": directory, "model": ident.get("model") or cfg.get("model") or be.get("model_id") or "?",
            "dataset": ident.get("dataset") or cfg.get("dataset") or "?", "seed": ident.get("seed", cfg.get("seed")),
            "temperature": ident.get("temperature", cfg.get("temperature")), "methods": store.methods()}


def _parse_maps(maps: list[str]) -> list[tuple[str, str]]:
    from ..methods.base import _split_top

    pairs = []
    for m in maps:
        parts = _split_top(m, "=")  # `=` inside a spec's parentheses is a parameter, not the separator
        if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
            raise ConfigError(f"--map must be METHOD_A=METHOD_B (e.g. 'budget=budget(max_thinking=256)'), got '{m}'")
        pairs.append((parts[0].strip(), parts[1].strip()))
    return pairs


def _method_pairs(dir_a: str, dir_b: str, ma: set[str], mb: set[str], maps: list[str]) -> list[tuple[str, str]]:
    """The --map pairs (each side checked), then every other method both runs have."""
    explicit = _parse_maps(maps)
    for x, y in explicit:
        if x not in ma:
            raise ConfigError(f"--map {x}={y}: {dir_a} has no method '{x}' (it has: {', '.join(sorted(ma)) or 'none'})")
        if y not in mb:
            raise ConfigError(f"--map {x}={y}: {dir_b} has no method '{y}' (it has: {', '.join(sorted(mb)) or 'none'})")
    mapped_a, mapped_b = {x for x, _ in explicit}, {y for _, y in explicit}
    return explicit + [(m, m) for m in sorted(ma & mb) if m not in mapped_a and m not in mapped_b]


def compare_runs(dir_a: str, dir_b: str, maps: list[str] | None = None) -> dict[str, Any]:
    """Compare the runs in `dir_a` (A, before) and `dir_b` (B, after). `maps` pairs methods
    with different names, as `METHOD_A=METHOD_B`; other methods are paired by name. Returns
    {"a", "b": each run's description, "rows": one `paired()` dict per method pair,
    "only_in_a", "only_in_b": methods left unpaired}."""
    with closing(Store(dir_a, create=False)) as a, closing(Store(dir_b, create=False)) as b:
        da, db = _describe(dir_a, a), _describe(dir_b, b)
        if da["dataset"] != db["dataset"]:
            raise ConfigError(f"{dir_a} ran dataset '{da['dataset']}' and {dir_b} ran '{db['dataset']}': a paired "
                              "comparison needs the same items")
        ma, mb = set(da["methods"]), set(db["methods"])
        pairs = _method_pairs(dir_a, dir_b, ma, mb, maps or [])
        rows = [{"method_a": x, "method_b": y, **paired(a.records(x), b.records(y))} for x, y in pairs]
    if not rows or not any(r["n"] for r in rows):
        why = ("no method of one run is in the other; pair them with --map A=B "
               f"(A has {', '.join(sorted(ma)) or 'none'}; B has {', '.join(sorted(mb)) or 'none'})") if not rows else \
            "no item was answered by the compared methods in both runs (different items, seeds or --limit)"
        raise ConfigError(f"nothing to compare between {dir_a} and {dir_b}: {why}")
    used_a, used_b = {x for x, _ in pairs}, {y for _, y in pairs}
    return {"a": da, "b": db, "rows": rows, "only_in_a": sorted(ma - used_a), "only_in_b": sorted(mb - used_b)}
