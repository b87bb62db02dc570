"""Copy stored records of some methods from one results store into another.

Why: a method that already ran on the same model, dataset, seed and items (e.g. `think`
and `direct` in `core-gsm8k`) need not run again to appear as a reference point in
another benchmark's report. Only records of items the destination already has are
copied (so every method is compared on the same items), with the oracle rows of those
items when `--oracle` is given. The two stores must agree on model, dataset, seed and
temperature; the copy is recorded in the destination's `commands` history.

    python benchmarks/merge_records.py SRC DST --methods think,direct [--oracle]
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from leanthink.errors import LeanthinkError  # noqa: E402
from leanthink.eval.store import Store  # noqa: E402

IDENTITY = ("model", "dataset", "seed", "temperature")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--methods", required=True, help="Comma-separated method specs as stored, e.g. think,direct.")
    ap.add_argument("--oracle", action="store_true", help="Also copy the oracle rows of the copied items.")
    a = ap.parse_args()
    try:
        src, dst = Store(a.src, create=False), Store(a.dst, create=False)
    except LeanthinkError as exc:
        raise SystemExit(f"error: {exc}") from None
    cs, cd = src.get_meta("config", {}), dst.get_meta("config", {})
    diff = [k for k in IDENTITY if cs.get(k) != cd.get(k)]
    if diff:
        raise SystemExit(f"the stores differ in {', '.join(diff)}: " + "; ".join(f"{k}: {cs.get(k)!r} vs {cd.get(k)!r}" for k in diff))
    items = {(r["item_id"], r["seed"]) for r in dst.records()}
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    copied = 0
    for m in methods:
        for r in src.records(m):
            if (r["item_id"], r["seed"]) in items and dst.put(m, r["item_id"], r["seed"], r["correct"], r):
                copied += 1
    orc = 0
    if a.oracle:
        done = dst.oracle_done()
        for o in src.oracle():
            key = (o["item_id"], o["seed"])
            if key in items and key not in done:
                dst.put_oracle(o["item_id"], o["seed"], o)
                orc += 1
    history = dst.get_meta("commands", [])
    dst.set_meta("commands", history + ["python " + " ".join(shlex.quote(x) for x in sys.argv)])
    config = dict(cd)
    config["methods"] = sorted(set(cd.get("methods", [])) | set(methods))
    dst.set_meta("config", config)
    print(f"copied {copied} records and {orc} oracle rows of {len(items)} items into {a.dst}")


if __name__ == "__main__":
    main()
