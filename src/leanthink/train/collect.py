"""Stage 1 of post-training: sample k reasoning chains per training question and grade them.

Why a stage of its own: every compressor (shortest-of-k, token/step pruning, rewriting)
starts from the model's *own* chains, graded against the gold answer. Sampling is the
expensive part on a CPU, so it runs on the cheap engine (llama.cpp by default, any backend
string works) and is stored per (item, sample) in the bench's crash-safe results store
(`eval/store.py`): a killed run loses only the chain in flight and a rerun continues.

Sample j of an item is the `think` method at `temperature` with seed `seed + j`, i.e. the
exact prompt and thinking format the trained model will see under `leanthink bench`.
Evaluation data is refused by name (`data.eval_source_reason`): chains collected from the
items a model is measured on would make every later benchmark meaningless.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

import typer

from ..errors import ConfigError, LeanthinkError
from ..eval.store import Store, check_out_dir
from ..models import redact

DEFAULT_MODEL = "qwen2.5-coder-0.5b"
SUMMARY_FILE = "summary.json"


@dataclass
class CollectConfig:
    dataset: str
    out: str
    model: str = DEFAULT_MODEL
    k: int = 4
    temperature: float = 0.7
    max_thinking: int = 512
    """Thinking cap (tokens): a chain that hits it gets its answer forced and is marked `budget`."""
    max_answer: int = 64
    limit: Optional[int] = None
    seed: int = 0
    """Sample j of every item uses seed `seed + j`."""
    data_seed: int = 1
    """Generator seed of `rg:` tasks. `bench` generates with seed 0 by default, so training
    problems are drawn from a different seed unless the spec says `?seed=`."""
    data_dir: Optional[str] = None
    skip_bad: bool = False
    force: bool = False
    command: str = ""

    def validate(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ConfigError(f"k (samples per question) must be a positive integer, got {self.k!r}")
        if self.temperature < 0:
            raise ConfigError(f"temperature must be >= 0, got {self.temperature}")
        if self.k > 1 and self.temperature == 0:
            raise ConfigError("k > 1 needs temperature > 0 (greedy decoding gives k identical chains)")
        if self.max_thinking < 1 or self.max_answer < 1:
            raise ConfigError("max_thinking and max_answer must be positive token counts")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit must be a positive integer, got {self.limit}")

    @property
    def method_spec(self) -> str:
        return f"think(max_thinking={self.max_thinking},max_answer={self.max_answer})"


def refuse_eval_data(dataset: str) -> None:
    """Raise ConfigError if `dataset` is evaluation data (see `data.eval_source_reason`)."""
    from ..data import eval_source_reason

    why = eval_source_reason(dataset)
    if why:
        raise ConfigError(
            f"refusing to collect training chains from '{dataset}': {why}; training on it would contaminate "
            "every benchmark. Use gsm8k_train (gsm8k_train.jsonl) or rg:TASK"
        )


def collect(cfg: CollectConfig, *, backend=None, on_progress: Callable[[dict], None] | None = None) -> dict:
    """Sample, grade and store `cfg.k` chains per item; returns the summary (also written to
    OUT/summary.json). Resumable: pairs (item, seed) already in the store are skipped."""
    from ..api import get_backend
    from ..data import load_dataset
    from ..eval.runner import run_one, versions
    from ..methods import get_method
    from ..reasoning import family_for

    cfg.validate()
    refuse_eval_data(cfg.dataset)
    check_out_dir(cfg.out, force=cfg.force)
    method = get_method(cfg.method_spec)
    ds = load_dataset(cfg.dataset, limit=cfg.limit, data_dir=cfg.data_dir, skip_bad=cfg.skip_bad, seed=cfg.data_seed)
    store = Store(cfg.out)
    store.check_identity({"kind": "collect", "model": redact(cfg.model), "dataset": cfg.dataset,
                          "temperature": cfg.temperature, "seed": cfg.seed, "data_seed": cfg.data_seed,
                          "method": method.spec})
    be = backend or get_backend(cfg.model)
    method.check(be)
    family = family_for(be.model_id, be.family_override)
    store.set_meta("config", {**asdict(cfg), "model": redact(cfg.model), "command": redact(cfg.command)})
    store.set_meta("versions", versions())
    store.set_meta("dataset", {"name": ds.name, "source": ds.source, "n_items": len(ds.items), "skipped": ds.skipped})
    store.set_meta("backend", {"name": be.name, "model_id": be.model_id, "family": family.name,
                               "emulated_thinking": family.emulated})

    done = store.done_keys()
    seeds = [cfg.seed + j for j in range(cfg.k)]
    todo = [(it, j, s) for it in ds.items for j, s in enumerate(seeds) if (method.spec, it.id, s) not in done]
    total = len(ds.items) * cfg.k
    state = {"total": total, "done": total - len(todo), "new": 0, "correct": 0, "tokens": 0,
             "elapsed_s": 0.0, "last": None}
    if on_progress:
        on_progress(dict(state))
    t0 = time.perf_counter()
    for it, j, s in todo:
        data = run_one(method, it, be, s, cfg.temperature)
        data.update(sample=j, dataset=ds.name, family=family.name)
        if store.put(method.spec, it.id, s, data["correct"], data):
            state["done"] += 1
            state["new"] += 1
            state["correct"] += int(data["correct"])
            state["tokens"] += data["usage"]["thinking"] + data["usage"]["answer"]
        state["elapsed_s"] = time.perf_counter() - t0
        state["last"] = data
        if on_progress:
            on_progress(dict(state))
    summary = summarize(store, method.spec, run_wall_s=time.perf_counter() - t0, run_new=state["new"])
    summary.update(dataset=ds.name, source=ds.source, model=redact(cfg.model), family=family.name,
                   method=method.spec, k=cfg.k, temperature=cfg.temperature, out=str(cfg.out))
    store.set_meta("summary", summary)
    Path(cfg.out, SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    store.close()
    return summary


def summarize(store: Store, method: str | None = None, *, run_wall_s: float = 0.0, run_new: int = 0) -> dict:
    """Numbers over every stored chain (all runs): items, samples, accuracy, pass@k, tokens,
    generation time (sum of chain latencies) and its throughput, plus this run's wall time."""
    recs = store.records(method)
    items: dict[str, list[dict]] = {}
    for r in recs:
        items.setdefault(r["item_id"], []).append(r)
    gen = [r["usage"]["thinking"] + r["usage"]["answer"] for r in recs]
    think = [r["usage"]["thinking"] for r in recs]
    latency = sum(float(r.get("latency_s") or 0.0) for r in recs)
    finish: dict[str, int] = {}
    for r in recs:
        finish[r.get("finish_reason", "?")] = finish.get(r.get("finish_reason", "?"), 0) + 1
    n = len(recs)
    return {
        "items": len(items),
        "samples": n,
        "accuracy": round(sum(r["correct"] for r in recs) / n, 4) if n else 0.0,
        "pass_at_k": round(sum(any(r["correct"] for r in rs) for rs in items.values()) / len(items), 4) if items else 0.0,
        "mean_tokens": round(sum(gen) / n, 1) if n else 0.0,
        "mean_thinking_tokens": round(sum(think) / n, 1) if n else 0.0,
        "finish_reasons": finish,
        "errors": sum(1 for r in recs if r.get("error")),
        "generation_s": round(latency, 1),
        "tokens_per_s": round(sum(gen) / latency, 2) if latency > 0 else 0.0,
        "this_run": {"new_samples": run_new, "wall_s": round(run_wall_s, 1)},
    }


def load_chains(directory: str | Path) -> tuple[list[dict], dict]:
    """(chain records, store meta) of a collect directory, for the compressors."""
    from ..errors import DataError

    p = Path(directory)
    if not (p / "results.sqlite").is_file():
        raise DataError(f"no collected chains in '{directory}' (expected {p / 'results.sqlite'}); "
                        "run `leanthink train collect --out DIR` first")
    store = Store(p, create=False)
    try:
        ident = store.get_meta("identity") or {}
        if ident.get("kind") != "collect":
            raise DataError(f"'{directory}' holds benchmark results, not collected chains (`leanthink train collect`)")
        meta = {k: store.get_meta(k) for k in ("identity", "config", "dataset", "backend", "summary")}
        recs = store.records(ident.get("method"))
    finally:
        store.close()
    return recs, meta


# -- CLI --------------------------------------------------------------------------------

def _progress_line(st: dict, t_start: float) -> str | None:
    last = st.get("last")
    if last is None:
        return (f"resuming: {st['done']}/{st['total']} chains already stored" if st["done"]
                else f"collecting {st['total']} chains")
    el = max(st["elapsed_s"], 1e-9)
    rate = st["tokens"] / el
    left = st["total"] - st["done"]
    eta = el / st["new"] * left if st["new"] else 0
    acc = st["correct"] / st["new"] if st["new"] else 0
    mark = "ok" if last.get("correct") else ("ERR" if last.get("error") else "--")
    return (f"[{st['done']}/{st['total']}] {last['item_id']} s{last['seed']} {mark} "
            f"{last['usage']['thinking']}+{last['usage']['answer']} tok {last.get('finish_reason')} | "
            f"correct this run {acc:.1%} ({st['correct']}/{st['new']}) · {rate:.1f} tok/s · {el:.0f}s · ETA {eta:.0f}s")


def collect_command(
    dataset: str = typer.Option("gsm8k_train", "--dataset", "-d", help="gsm8k_train, rg:TASK[?n=..], jsonl:PATH (evaluation sets are refused)."),
    out: str = typer.Option(..., "--out", "-o", help="Chains directory (resumable: rerun the same command to continue)."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", help="Any model string: preset, .gguf, HF dir/id, openai:URL#MODEL."),
    k: int = typer.Option(4, "--k", "-k", help="Samples per question (seeds SEED..SEED+k-1)."),
    temperature: float = typer.Option(0.7, "--temperature", help="Sampling temperature (> 0 when k > 1)."),
    max_thinking: int = typer.Option(512, "--max-thinking", help="Thinking cap in tokens; capped chains are marked `budget`."),
    max_answer: int = typer.Option(64, "--max-answer", help="Cap on tokens after the reasoning."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Only the first N questions."),
    seed: int = typer.Option(0, "--seed", help="Base sampling seed."),
    data_seed: int = typer.Option(1, "--data-seed", help="Generator seed for rg: tasks (bench uses 0)."),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="Directory with gsm8k_train.jsonl (or LEANTHINK_DATA_DIR)."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip malformed dataset lines instead of failing."),
    force: bool = typer.Option(False, "--force", help="Write into a non-empty directory without a store."),
):
    """Sample k chains per training question, grade them, store them (resumable)."""
    from ..eval.runner import command_line

    cfg = CollectConfig(dataset=dataset, out=out, model=model, k=k, temperature=temperature,
                        max_thinking=max_thinking, max_answer=max_answer, limit=limit, seed=seed,
                        data_seed=data_seed, data_dir=data_dir, skip_bad=skip_bad, force=force,
                        command=command_line())
    t_start = time.time()

    def on_progress(st: dict) -> None:
        line = _progress_line(st, t_start)
        if line:
            print(line, file=sys.stderr, flush=True)

    try:
        summary = collect(cfg, on_progress=on_progress)
    except LeanthinkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(2)
    except KeyboardInterrupt:
        print(f"interrupted: finished chains are stored in {out}; rerun the same command to continue", file=sys.stderr)
        raise typer.Exit(130)
    print(json.dumps(summary, indent=2))
