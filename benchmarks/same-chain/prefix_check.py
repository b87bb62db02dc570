"""Do a bench store's methods start from `think`'s chain? (issue 13: same prompt, same chain)

For every item, checks whether each method's reasoning is a prefix of `think`'s reasoning on the
same item (an early exit or a cap cuts the chain; it must not change it). Optionally compares
the store with an older one on the items both hold: how many `think` chains are identical, and
each method's accuracy and tokens on those items in both.

    python benchmarks/same-chain/prefix_check.py benchmarks/thinking-gsm8k-v2 \
        --old benchmarks/thinking-gsm8k --old-think benchmarks/core-gsm8k
"""

from __future__ import annotations

import argparse
import json
import sqlite3


def load(path: str) -> dict[tuple[str, str], dict]:
    db = sqlite3.connect(f"{path}/results.sqlite")
    out = {(m, i): json.loads(d) for m, i, d in db.execute("SELECT method, item_id, data FROM records")}
    db.close()
    return out


def prefix_table(recs: dict, methods: list[str]) -> list[str]:
    items = sorted({i for (m, i) in recs if m == "think"})
    lines = ["| method | items | reasoning is a prefix of think's |", "|---|---:|---:|"]
    for m in methods:
        both = [i for i in items if (m, i) in recs]
        ok = sum(recs["think", i]["reasoning"].startswith(recs[m, i]["reasoning"].rstrip()) for i in both)
        lines.append(f"| `{m}` | {len(both)} | {ok} |")
    return lines


def summary(recs: dict, m: str, items: list[str]) -> str:
    rs = [recs[m, i] for i in items if (m, i) in recs]
    if not rs:
        return "–"
    acc = 100 * sum(bool(r.get("correct")) for r in rs) / len(rs)
    tok = sum(r["usage"]["total"] for r in rs) / len(rs)  # prompt tokens are not in total
    return f"{acc:.1f}% / {tok:.0f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("store")
    ap.add_argument("--old", help="an older store with the same methods")
    ap.add_argument("--old-think", help="where the older run's think records are (if not in --old)")
    a = ap.parse_args()
    new = load(a.store)
    methods = sorted({m for (m, _) in new} - {"think"})
    print("\n".join(prefix_table(new, methods)))
    if not a.old:
        return 0
    old = load(a.old)
    if a.old_think:
        old.update({k: v for k, v in load(a.old_think).items() if k[0] == "think"})
    items = sorted({i for (m, i) in new if m == "think"} & {i for (m, i) in old if m == "think"})
    items = [i for i in items if all((m, i) in new and (m, i) in old for m in methods)]
    same_think = sum(new["think", i]["reasoning"] == old["think", i]["reasoning"] for i in items)
    print(f"\n{len(items)} items in both stores for every method; think's chain identical on {same_think}\n")
    print("\n".join(prefix_table({k: v for k, v in old.items() if k[1] in items}, methods)).replace(
        "prefix of think's", "prefix of think's (old store)"))
    print("\n| method | old: accuracy / mean total tokens | new |\n|---|---:|---:|")
    for m in ["think"] + methods:
        print(f"| `{m}` | {summary(old, m, items)} | {summary(new, m, items)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
