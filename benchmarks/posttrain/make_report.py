"""Post-train benchmark report: base vs trained models under `think`, paired on common items.

    python benchmarks/posttrain/make_report.py --base /work/posttrain-runs/bench-base \
        --run "SFT gold-solution (40 ex)=/work/posttrain-runs/bench-sft-gold" [--run NAME=DIR[@METHOD] ...] \
        --meta /work/posttrain-runs/stages.json --title TITLE --out benchmarks/posttrain

Reads the bench stores (results.sqlite), writes report.md, summary.json and pareto.png
(accuracy vs mean thinking tokens, 95% bootstrap CIs). Only items present in every store
are compared, so a run cut short still gives a fair paired comparison.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from leanthink.eval.metrics import bootstrap_ci, mcnemar_exact
from leanthink.eval.store import Store


def load(d: str, method: str | None) -> dict:
    """Records of one method; `None`: the store's only method (think and think(max_thinking=1024)
    are the same greedy chain whenever the cap is not reached, see `cap_hits`)."""
    recs = [r for r in Store(d, create=False).records() if not r.get("error")]
    methods = sorted({r["method"] for r in recs})
    if method is None:
        if len(methods) != 1:
            raise SystemExit(f"{d} holds methods {methods}: give NAME=DIR@METHOD")
        method = methods[0]
    return {r["item_id"]: r for r in recs if r["method"] == method}


def row(name: str, recs: dict, items: list[str], base: dict | None) -> dict:
    corr = [float(recs[i]["correct"]) for i in items]
    think = [recs[i]["usage"]["thinking"] for i in items]
    total = [recs[i]["usage"]["total"] for i in items]
    out = {"name": name, "n": len(items), "accuracy": sum(corr) / len(items), "accuracy_ci": bootstrap_ci(corr),
           "thinking_mean": sum(think) / len(items), "total_mean": sum(total) / len(items),
           "thinking_ci": bootstrap_ci(think), "thinking_median": sorted(think)[len(think) // 2], "finish_not_stop": sum(recs[i]["finish_reason"] != "stop" for i in items),
           "forced": sum(recs[i]["usage"].get("forced", 0) > 0 for i in items), "max_thinking": max(think),
           "method": next(iter(recs.values()))["method"], "model": next(iter(recs.values()))["model"]}
    if base is not None:
        lost = sum(1 for i in items if base[i]["correct"] and not recs[i]["correct"])
        won = sum(1 for i in items if not base[i]["correct"] and recs[i]["correct"])
        bt = sum(base[i]["usage"]["thinking"] for i in items) / len(items)
        out.update(flips_lost=lost, flips_won=won, mcnemar_p=mcnemar_exact(lost, won),
                   thinking_vs_base=out["thinking_mean"] / bt if bt else None)
    return out


def parse_run(spec: str) -> tuple[str, dict]:
    name, _, rest = spec.partition("=")
    d, _, m = rest.partition("@")
    return name, load(d, m or None)


def table(rows: list[dict]) -> list[str]:
    lines = ["| model | method | n | accuracy [95% CI] | thinking tok (mean) | vs base | thinking median | total tok (mean) | max thinking | forced answer | flips -/+ | McNemar p |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lo, hi = r["accuracy_ci"]
        vs = f"{r['thinking_vs_base']:.2f}×" if r.get("thinking_vs_base") else "1.00×"
        flips = f"{r['flips_lost']}/{r['flips_won']}" if "flips_lost" in r else "–"
        p = f"{r['mcnemar_p']:.3g}" if "mcnemar_p" in r else "–"
        lines.append(f"| {r['name']} | `{r['method']}` | {r['n']} | {r['accuracy']:.1%} [{lo:.1%}, {hi:.1%}] | "
                     f"{r['thinking_mean']:.0f} | {vs} | {r['thinking_median']} | {r['total_mean']:.0f} | {r['max_thinking']} | {r['forced']} | "
                     f"{flips} | {p} |")
    return lines


def plot(pairs: list[dict], title: str, path: Path) -> None:
    try:
        import matplotlib
    except ImportError:
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    seen: set[tuple] = set()
    for k, pr in enumerate(pairs):
        for j, r in enumerate(pr["rows"]):
            if j == 0 and tuple(pr["items"]) in seen:
                continue  # the same base row once per item set
            seen.add(tuple(pr["items"]))
            lo, hi = r["accuracy_ci"]
            ax.errorbar(r["thinking_mean"], r["accuracy"], yerr=[[r["accuracy"] - lo], [hi - r["accuracy"]]],
                        fmt="o" if j else "s", color="grey" if not j else f"C{k}", capsize=3,
                        label=f"{r['name']} (n={r['n']})")
    ax.set_xlabel("mean thinking tokens")
    ax.set_ylabel("accuracy (95% bootstrap CI)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=6.5)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True, help="DIR[@METHOD]: the base model's store, the reference for flips")
    ap.add_argument("--base-name", default="base (same export path, q8_0)")
    ap.add_argument("--run", action="append", default=[], help="NAME=DIR[@METHOD]")
    ap.add_argument("--method", default=None, help="the base store's method (or DIR@METHOD)")
    ap.add_argument("--title", default="GSM8K dev (first items), Qwen2.5-Coder-0.5B, base vs LoRA-SFT")
    ap.add_argument("--note", action="append", default=[], help="a line added under the table")
    ap.add_argument("--meta", help="JSON with stage timings/throughput to embed")
    ap.add_argument("--out", default="benchmarks/posttrain")
    a = ap.parse_args()
    bdir, _, bmethod = a.base.partition("@")
    base = load(bdir, bmethod or a.method)
    runs = [parse_run(spec) for spec in a.run]
    def order(item_id: str) -> tuple:  # gsm8k/12 before gsm8k/100; MATH-500 ids (".../807.json") by text
        last = item_id.rsplit("/", 1)[-1]
        return (0, int(last), item_id) if last.isdigit() else (1, 0, item_id)
    rows, pairs, seen = [], [], set()
    for name, recs in runs:  # each run is paired with the base on the items both have
        items = sorted(set(base) & set(recs), key=order)
        pair = [row(a.base_name, base, items, None), row(name, recs, items, base)]
        key = tuple(items)
        rows += pair if key not in seen else pair[1:]  # the base row once per item set
        seen.add(key)
        pairs.append({"run": name, "items": items, "rows": pair})
    if not runs:
        items = sorted(base, key=order)
        rows = [row(a.base_name, base, items, None)]
        pairs.append({"run": None, "items": items, "rows": rows})
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = json.loads(Path(a.meta).read_text()) if a.meta else {}
    (out / "summary.json").write_text(json.dumps({"title": a.title, "base": a.base, "pairs": pairs, "stages": meta},
                                                 indent=2))
    lines = [f"# Post-train benchmark: {a.title}", "",
             "Each row is paired with the base on the items both runs finished (n per row).", ""]
    lines += table(rows)
    lines += ["", "flips -/+: items the base got right and this model wrong / the reverse (paired, same items).",
              "forced answer: chains whose answer the harness had to force (thinking cap reached, or no `\\boxed{}` written).",
              "Thinking tokens: the model's text before the first `\\boxed{` (emulated thinking, Qwen2.5 family)."]
    lines += a.note
    if meta:
        lines += ["", "## Stages", "", "```json", json.dumps(meta, indent=2), "```"]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    plot(pairs, a.title, out / "pareto.png")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
