"""Build the latent-reasoning benchmark tables from the checkpoints and bench stores.

    .venv/bin/python benchmarks/latent/table.py [RUNS] [--export DIR]   (default /work/runs/latent)

Prints two markdown tables: training (time, tokens, throughput, loss) from each
checkpoint's latent.json, and evaluation (accuracy with 95% CI, generated tokens, latent
steps, peak context, wall time; Pareto fronts by tokens, wall time and peak context) from
each `bench-NAME` store, on the items every finished store shares, so the rows compare the
same questions.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from leanthink.eval.store import Store
from leanthink.eval.views import pareto_table, summary_rows

ORDER = ["nocot-sft", "cot-sft", "lightthinker", "coconut", "codi", "softcot"]


def training_table(runs: Path) -> list[str]:
    out = ["| recipe | init | steps x batch | train time | train tokens | tokens/s | loss first -> last |",
           "|---|---|---|---|---|---|---|"]
    for name in ORDER:
        p = runs / name / "latent.json"
        if not p.is_file():
            out.append(f"| {name} | (not finished) | | | | | |")
            continue
        m = json.loads(p.read_text())
        o = m["options"]
        init = Path(m["base_model"]).name if "/" in m["base_model"] else m["base_model"]
        out.append(f"| {name} | {init} | {m['steps']} x {o['batch_size']} | {m['train_s'] / 60:.1f} min | "
                   f"{m['train_tokens']:,} | {m['tokens_per_s']} | {m['loss_first']} -> {m['loss_last']} |")
    return out


def eval_table(runs: Path) -> list[str]:
    recs: dict[str, list[dict]] = {}
    for name in ORDER:
        d = runs / f"bench-{name}"
        if (d / "results.sqlite").is_file():
            st = Store(d, create=False)
            recs[name] = st.records()
            st.close()
    if not recs:
        return ["(no bench results yet)"]
    common = set.intersection(*({r["item_id"] for r in rs} for rs in recs.values()))
    rows = summary_rows({n: [r for r in rs if r["item_id"] in common] for n, rs in recs.items()})
    return [f"{len(common)} evaluation items shared by every row.", ""] + pareto_table(rows)


def export(runs: Path, out: Path) -> None:
    """Per-item records (compact JSONL), each checkpoint's latent.json and the Pareto figure,
    so the numbers above can be checked without the checkpoints."""
    import base64

    from leanthink.eval.views import pareto_figure

    out.mkdir(parents=True, exist_ok=True)
    keep = ("method", "item_id", "question", "gold", "answer", "correct", "usage", "peak_context", "latency_s",
            "reasoning", "answer_text", "finish_reason")
    meta, by = {}, {}
    with (out / "records.jsonl").open("w") as fh:
        for name in ORDER:
            d = runs / f"bench-{name}"
            if (runs / name / "latent.json").is_file():
                meta[name] = json.loads((runs / name / "latent.json").read_text())
            if (d / "results.sqlite").is_file():
                st = Store(d, create=False)
                by[name] = st.records()
                st.close()
                for r in by[name]:
                    fh.write(json.dumps({"checkpoint": name, **{k: r.get(k) for k in keep}}) + "\n")
    (out / "checkpoints.json").write_text(json.dumps(meta, indent=1))
    common = set.intersection(*({r["item_id"] for r in rs} for rs in by.values()))
    rows = summary_rows({n: [r for r in rs if r["item_id"] in common] for n, rs in by.items()})
    (out / "pareto.png").write_bytes(base64.b64decode(pareto_figure(rows)))


def main() -> None:
    args = sys.argv[1:]
    dest = None
    if "--export" in args:
        i = args.index("--export")
        dest = Path(args[i + 1])
        del args[i:i + 2]
    runs = Path(args[0] if args else "/work/runs/latent")
    print("\n".join(training_table(runs) + [""] + eval_table(runs)))
    if dest:
        export(runs, dest)


if __name__ == "__main__":
    main()
