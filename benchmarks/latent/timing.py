"""Wall time per item of every latent-benchmark checkpoint under the same conditions.

    .venv/bin/python benchmarks/latent/timing.py [RUNS] [N_ITEMS]

Why: the bench runs of the six checkpoints happened one after another on 2 CPU cores shared
with other jobs, so their wall times carry whatever else ran at that moment. Here all
checkpoints are loaded in one process and run round-robin on the same items (one thread),
so load changes hit every method alike. Prints a markdown table of mean seconds per item,
forward passes and peak context.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import leanthink
from leanthink.api import get_backend

PAIRS = [("nocot-sft", "latent-sft"), ("cot-sft", "latent-sft"), ("lightthinker", "lightthinker"),
         ("coconut", "coconut"), ("codi", "codi"), ("softcot", "softcot")]


def main() -> None:
    runs = Path(sys.argv[1] if len(sys.argv) > 1 else "/work/runs/latent")
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    items = [json.loads(line) for line in (runs / "eval.jsonl").read_text().splitlines()][:n]
    pairs = [(c, m) for c, m in PAIRS if (runs / c / "latent.json").is_file()]
    backends = {c: get_backend(f"{runs / c}?threads=1", quiet=True) for c, _ in pairs}
    stats = {c: {"s": 0.0, "passes": 0, "peak": 0, "tokens": 0} for c, _ in pairs}
    for it in items:
        for c, m in pairs:
            t0 = time.perf_counter()
            res = leanthink.solve(it["question"], m, backend=backends[c])
            st = stats[c]
            st["s"] += time.perf_counter() - t0
            st["passes"] += next(t.detail["forward_passes"] for t in res.trace if t.event == "accounting")
            st["peak"] += res.peak_context or 0
            st["tokens"] += res.usage.total
    print(f"{len(items)} items, round-robin, 1 thread each\n")
    print("| checkpoint | method | wall s/item | forward passes/item | peak context | output tokens |")
    print("|---|---|---|---|---|---|")
    for c, m in pairs:
        st = stats[c]
        print(f"| {c} | {m} | {st['s'] / n:.2f} | {st['passes'] / n:.1f} | {st['peak'] / n:.1f} | {st['tokens'] / n:.1f} |")


if __name__ == "__main__":
    main()
