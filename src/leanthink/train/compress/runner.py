"""`leanthink train compress`: collected chains -> verified, formatted training JSONL.

Every candidate a compressor proposes is re-verified before it is kept: the formatted
completion's final answer must grade correct against the gold answer (pruning compressors
keep the answer text verbatim, so this checks that it survived), and with `rederive` the
generation model must also re-derive the gold answer greedily from the compressed reasoning
alone (the forced-answer probe the early-exit methods use). Failures are dropped and
counted by reason in the summary sidecar.

Resumable: each finished item is appended to `OUT.work.jsonl`; a rerun with the same spec
and chains continues from there (a different spec is refused, not mixed in).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

import typer

from ...errors import ConfigError, DataError, LeanthinkError
from ..dataset import format_completion, make_example, summary_path, write_examples
from .base import Candidate, ChainRec, Compressor, Context, Drop, Group, get_compressor


@dataclass
class CompressConfig:
    chains: str
    spec: str
    out: str
    scorer: Optional[str] = None
    """Model string of the scoring model (default: the model that generated the chains)."""
    model: Optional[str] = None
    """Generation model for `rewrite` and `rederive` (default: the chains' model)."""
    include_cut: bool = False
    """Also use correct chains whose thinking hit the cap (their answer was forced)."""
    rederive: bool = False
    limit: Optional[int] = None
    scorer_ctx: int = 2048


def work_path(out: str | Path) -> Path:
    p = Path(out)
    return p.with_name(p.name + ".work.jsonl")


def build_groups(recs: list[dict]) -> list[Group]:
    groups: dict[str, Group] = {}
    for r in recs:
        c = ChainRec.from_record(r)
        g = groups.get(c.item_id)
        if g is None:
            g = groups[c.item_id] = Group(c.item_id, c.question, c.gold, c.kind, [])
        g.chains.append(c)
    for g in groups.values():
        g.chains.sort(key=lambda c: c.seed)
    return list(groups.values())


def attach_references(groups: list[Group], meta: dict) -> None:
    """Reference solutions (GSM8K's worked answers) from the collected dataset, when it has them."""
    from ..collect import refuse_eval_data
    from ...data import load_dataset

    cfg = meta.get("config") or {}
    try:
        refuse_eval_data(cfg.get("dataset", ""))
        ds = load_dataset(cfg["dataset"], limit=cfg.get("limit"), data_dir=cfg.get("data_dir"),
                          skip_bad=True, seed=cfg.get("data_seed", 1))
    except (LeanthinkError, KeyError):
        return
    sol = {it.id: it.meta.get("solution") for it in ds.items}
    for g in groups:
        g.reference = sol.get(g.item_id)


def verify(cand: Candidate, group: Group, ctx: Context, rederive: bool) -> tuple[str | None, str]:
    """(drop reason or None, formatted completion)."""
    from ...grading import extract_answer, grade

    if not cand.reasoning.strip():
        return "empty_reasoning", ""
    if cand.pruned and cand.answer_text != cand.source.answer_text:
        return "answer_changed", ""
    completion = format_completion(ctx.family, cand.reasoning, cand.answer_text)
    if not grade(extract_answer(completion), group.gold, group.kind):
        return "wrong_answer", completion
    if rederive:
        from ...backends.base import SamplingParams
        from ...methods.engine import boxed_with_probs

        prefix = cand.source.prompt + cand.reasoning.rstrip() + ctx.family.force_end()
        text, _, _ = boxed_with_probs(ctx.backend, prefix, SamplingParams(max_tokens=40, temperature=0.0))
        if not grade(extract_answer("\\boxed{" + text), group.gold, group.kind):
            return "not_rederived", completion
    if cand.weight <= 0:
        return "zero_weight", completion
    return None, completion


def _open_work(path: Path, header: dict) -> dict[str, dict]:
    done: dict[str, dict] = {}
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"header": header}) + "\n")
        return done
    lines = path.read_text(encoding="utf-8").splitlines()
    try:
        old = json.loads(lines[0]).get("header") if lines else None
    except json.JSONDecodeError:
        old = None
    if old != header:
        raise ConfigError(f"'{path}' holds work of another run ({old}); delete it or choose another --out")
    for line in lines[1:]:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill: that item is redone
        done[row["item_id"]] = row
    return done


def _check_config(cfg: CompressConfig) -> None:
    if not cfg.out.endswith(".jsonl"):
        raise ConfigError(f"--out must be a .jsonl file path, got '{cfg.out}'")
    if cfg.limit is not None and cfg.limit < 1:
        raise ConfigError(f"limit must be a positive integer, got {cfg.limit}")


def _make_context(cfg: CompressConfig, family, chain_model: str | None, scorer, backend) -> Context:
    """The compressors' context; the scorer and generation model load lazily, only if a step asks."""

    def make_scorer():
        if scorer is not None:
            return scorer
        from .scoring import load_scorer

        return load_scorer(cfg.scorer or chain_model, n_ctx=cfg.scorer_ctx)

    def make_backend():
        if backend is not None:
            return backend
        from ...api import get_backend

        return get_backend(cfg.model or chain_model, quiet=True)

    return Context(family=family, scorer_factory=make_scorer, backend_factory=make_backend)


def _compress_group(g: Group, comp: Compressor, ctx: Context, cfg: CompressConfig, source: str) -> dict:
    """One item's work row: the verified examples of its chains and the drops, with their reasons."""
    examples, drops = [], []
    for res in comp.apply(g, ctx, include_cut=cfg.include_cut):
        if isinstance(res, Drop):
            drops.append(asdict(res))
            continue
        why, completion = verify(res, g, ctx, cfg.rederive)
        if why:
            drops.append({"item_id": g.item_id, "reason": why, "seed": res.source.seed})
            continue
        m = {"item_id": g.item_id, "seed": res.source.seed, "source": source, "compressor": comp.spec,
             "importance": comp.importance, "orig_tokens": res.orig_tokens, "tokens": res.tokens,
             "ratio": round(res.tokens / res.orig_tokens, 4) if res.orig_tokens else None,
             "gold": g.gold, **res.meta}
        examples.append(make_example(g.question, completion, weight=res.weight, meta=m,
                                     user_suffix=res.user_suffix))
    return {"item_id": g.item_id, "examples": examples, "drops": drops}


def _run_groups(groups: list[Group], done: dict[str, dict], work: Path, comp: Compressor, ctx: Context,
                cfg: CompressConfig, source: str, on_progress: Callable[[dict], None] | None) -> None:
    """Compress the groups not in `done` (filling it in), appending each row to the work file as it finishes."""
    state = {"total": len(groups), "done": 0, "kept": 0, "dropped": 0}
    with open(work, "a", encoding="utf-8") as wf:
        for g in groups:
            if g.item_id not in done:
                done[g.item_id] = row = _compress_group(g, comp, ctx, cfg, source)
                wf.write(json.dumps(row, ensure_ascii=False) + "\n")
                wf.flush()
            row = done[g.item_id]
            state["done"] += 1
            state["kept"] += len(row["examples"])
            state["dropped"] += len(row["drops"])
            if on_progress:
                on_progress(dict(state, last=row))


def _summary(cfg: CompressConfig, comp: Compressor, ctx: Context, groups: list[Group], examples: list[dict],
             drops: list[dict], meta: dict, chain_model: str | None, source: str, t0: float) -> dict:
    by_reason: dict[str, int] = {}
    for d in drops:
        by_reason[d["reason"]] = by_reason.get(d["reason"], 0) + 1
    ratios = [e["meta"]["ratio"] for e in examples if e["meta"].get("ratio") is not None]
    orig = sum(e["meta"]["orig_tokens"] for e in examples)
    new = sum(e["meta"]["tokens"] for e in examples)
    family = ctx.family
    return {
        "compressor": comp.spec, "importance": comp.importance,
        "scorer": getattr(ctx._scorer, "name", None), "chains": str(cfg.chains), "source": source,
        "source_detail": (meta.get("dataset") or {}).get("source"), "chains_model": chain_model, "family": family.name,
        "completion_format": ("<think>\\nREASONING\\n</think>\\n\\nANSWER" if family.native_thinking
                              else "REASONING ANSWER (emulated thinking: no tags)"),
        "user_suffix": comp.user_suffix() or None,
        "items": len(groups), "chains_in": sum(len(g.chains) for g in groups),
        "kept": len(examples), "dropped": len(drops), "dropped_by_reason": by_reason,
        "mean_ratio": round(sum(ratios) / len(ratios), 4) if ratios else None,
        "by_target_ratio": _by_target_ratio(examples),
        "token_ratio": round(new / orig, 4) if orig else None,
        "mean_orig_tokens": round(orig / len(examples), 1) if examples else None,
        "mean_tokens": round(new / len(examples), 1) if examples else None,
        "include_cut": cfg.include_cut, "rederive": cfg.rederive, "time_s": round(time.perf_counter() - t0, 1),
        "out": str(cfg.out),
    }


def compress(cfg: CompressConfig, *, scorer=None, backend=None,
             on_progress: Callable[[dict], None] | None = None) -> dict:
    """Compress the chains in `cfg.chains` with `cfg.spec` into `cfg.out`; returns the summary."""
    from ...reasoning import family_for
    from ..collect import load_chains

    comp: Compressor = get_compressor(cfg.spec)
    _check_config(cfg)
    recs, meta = load_chains(cfg.chains)
    if not recs:
        raise DataError(f"'{cfg.chains}' holds no chains yet")
    bmeta = meta.get("backend") or {}
    chain_model = (meta.get("identity") or {}).get("model")
    family = family_for(bmeta.get("model_id", ""), bmeta.get("family"))
    groups = build_groups(recs)[: cfg.limit]
    if comp.name == "asap":
        attach_references(groups, meta)
    ctx = _make_context(cfg, family, chain_model, scorer, backend)
    header = {"spec": comp.spec, "chains": str(Path(cfg.chains).resolve()), "include_cut": cfg.include_cut,
              "rederive": cfg.rederive, "scorer": cfg.scorer, "model": cfg.model}
    work = work_path(cfg.out)
    done = _open_work(work, header)
    source = (meta.get("dataset") or {}).get("name", "")
    t0 = time.perf_counter()
    _run_groups(groups, done, work, comp, ctx, cfg, source, on_progress)
    examples = comp.finalize([e for g in groups for e in done[g.item_id]["examples"]])
    drops = [d for g in groups for d in done[g.item_id]["drops"]]
    summary = _summary(cfg, comp, ctx, groups, examples, drops, meta, chain_model, source, t0)
    if not examples:
        summary_path(cfg.out).write_text(json.dumps(summary, indent=2) + "\n")
        raise DataError(f"no example survived compression and verification ({summary['dropped_by_reason']}); "
                        f"summary in {summary_path(cfg.out)}")
    write_examples(cfg.out, examples, summary)
    return summary


def _progress_line(st: dict) -> str:
    row = st["last"]
    reasons = ",".join(sorted({d["reason"] for d in row["drops"]}))
    return (f"[{st['done']}/{st['total']}] {row['item_id']}: kept {len(row['examples'])}"
            + (f", dropped {len(row['drops'])} ({reasons})" if row["drops"] else "")
            + f" | total kept {st['kept']}, dropped {st['dropped']}")


def compress_command(
    chains: str = typer.Option(..., "--chains", "-c", help="Directory written by `leanthink train collect`."),
    compressor: str = typer.Option(..., "--compressor", "-x", help="shortest, shortest(weights=o1pruner), tokenskip(ratio=0.6), spirit(ratio=0.7), asap(ratio=0.6), rewrite."),
    out: str = typer.Option(..., "--out", "-o", help="Training JSONL to write (a NAME.summary.json sidecar goes next to it)."),
    scorer: Optional[str] = typer.Option(None, "--scorer", help="Scoring model for surprisal/perplexity (default: the chains' model)."),
    model: Optional[str] = typer.Option(None, "--model", help="Generation model for rewrite and --rederive (default: the chains' model)."),
    include_cut: bool = typer.Option(False, "--include-cut", help="Also use correct chains whose thinking hit the cap."),
    rederive: bool = typer.Option(False, "--rederive", help="Keep an example only if the model re-derives the answer from the compressed reasoning."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Only the first N items."),
    scorer_ctx: int = typer.Option(2048, "--scorer-ctx", help="Context size of the llama.cpp scorer."),
):
    """Compress collected chains into a verified prompt/completion training set."""
    cfg = CompressConfig(chains=chains, spec=compressor, out=out, scorer=scorer, model=model, include_cut=include_cut,
                         rederive=rederive, limit=limit, scorer_ctx=scorer_ctx)
    try:
        summary = compress(cfg, on_progress=lambda st: print(_progress_line(st), file=sys.stderr, flush=True))
    except LeanthinkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(2)
    except KeyboardInterrupt:
        print(f"interrupted: finished items are in {work_path(out)}; rerun the same command to continue", file=sys.stderr)
        raise typer.Exit(130)
    print(json.dumps(summary, indent=2))


def _by_target_ratio(examples: list[dict]) -> dict | None:
    """Examples and achieved token ratio per target γ (a `mix` run has several; None when no target)."""
    groups: dict[str, list[dict]] = {}
    for e in examples:
        t = e["meta"].get("target_ratio")
        if t is not None:
            groups.setdefault(f"{t:g}", []).append(e)
    if not groups:
        return None
    return {t: {"examples": len(es), "token_ratio": round(sum(e["meta"]["tokens"] for e in es)
                                                          / max(1, sum(e["meta"]["orig_tokens"] for e in es)), 4)}
            for t, es in sorted(groups.items())}
