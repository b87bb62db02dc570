"""`leanthink` command line."""

from __future__ import annotations

import json
import sys
import time
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from .errors import LeanthinkError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Make reasoning models spend fewer tokens for the same accuracy.",
    pretty_exceptions_enable=False,
)
console = Console()
err = Console(stderr=True)


def _fail(exc: Exception) -> None:
    err.print(f"[bold red]error:[/] {escape(str(exc))}")
    raise typer.Exit(2)


@app.command()
def solve(
    question: str = typer.Argument(..., help="The question to answer."),
    method: str = typer.Option("think", "--method", "-m", help="Method spec, e.g. think, direct, budget(max_thinking=256), chain-of-draft+deer."),
    model: Optional[str] = typer.Option(None, "--model", help="Preset, .gguf path, HF id or openai:URL#model (default: qwen2.5-coder-1.5b)."),
    budget: Optional[int] = typer.Option(None, "--budget", "-b", help="Token budget for methods that have one."),
    seed: int = typer.Option(0, help="Sampling seed."),
    temperature: float = typer.Option(0.0, help="Sampling temperature (0 = greedy)."),
    as_json: bool = typer.Option(False, "--json", help="Print the Result as JSON."),
    show_reasoning: bool = typer.Option(True, "--reasoning/--no-reasoning", help="Show or hide the reasoning."),
):
    """Answer one question and show answer, reasoning and token usage."""
    from .api import get_backend, resolve_method
    from .methods import Task

    try:
        m = resolve_method(method, budget)
        if not question.strip():
            raise LeanthinkError("the question is empty")
        be = get_backend(model, quiet=as_json)
        task = Task.create(question, be, seed=seed, temperature=temperature)
        with err.status(f"[dim]{m.spec} on {be.model_id}…", spinner="dots") if not as_json else _nullctx():
            res = m(task)
    except LeanthinkError as exc:
        _fail(exc)
        return
    if as_json:
        print(res.model_dump_json(indent=2))
        return
    if show_reasoning and res.reasoning:
        label = "reasoning (emulated thinking)" if res.emulated_thinking else "reasoning"
        console.print(Panel(Text(res.reasoning), title=label, border_style="dim", title_align="left"))
    answer = Text("Answer: ", style="bold")
    answer.append(res.answer if res.answer is not None else "(none found)", style="" if res.answer is not None else "red")
    console.print(answer)
    if res.answer_text and res.answer_text.strip() != (res.answer or ""):
        console.print(Text(res.answer_text.strip(), style="dim"))
    u = res.usage
    console.print(
        f"[dim]{res.method} · {res.model} ({res.backend}) · thinking {u.thinking} · answer {u.answer} · "
        f"forced {u.forced} · overhead {u.overhead} · total {u.total} tokens · {res.latency_s:.1f}s · "
        f"finish {res.finish_reason}[/]"
    )
    for ev in res.trace:
        console.print(Text(f"  trace: {ev.describe()}", style="dim"))


class _nullctx:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


@app.command()
def methods(as_json: bool = typer.Option(False, "--json", help="Machine-readable list.")):
    """List the registered methods and their parameters."""
    from .methods import REGISTRY, ensure_loaded

    ensure_loaded()
    rows = []
    for name in sorted(REGISTRY):
        cls = REGISTRY[name]
        params = {
            k: {"default": f.default, "description": f.description or "", "type": getattr(f.annotation, "__name__", str(f.annotation))}
            for k, f in cls.Params.model_fields.items()
        }
        rows.append({"name": name, "kind": cls.kind, "summary": cls.summary, "reference": cls.reference,
                     "needs": sorted(cls.needs), "budget_param": cls.budget_param, "params": params})
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return
    t = Table(title="leanthink methods", show_lines=True)
    t.add_column("method", style="bold")
    t.add_column("kind")
    t.add_column("what it does")
    t.add_column("parameters (default)")
    for r in rows:
        ps = "\n".join(f"{k}={v['default']}  [dim]{v['description']}[/]" for k, v in r["params"].items()) or "-"
        t.add_row(r["name"], r["kind"], r["summary"] + (f"\n[dim]{r['reference']}[/]" if r["reference"] else ""), ps)
    console.print(t)
    console.print("[dim]Combine a prompt-level method with another: e.g. chain-of-draft+deer. Set parameters: budget(max_thinking=256).[/]")


@app.command()
def models():
    """List the embedded model presets and whether they are installed."""
    from .models import PRESETS, _chunk_paths, _install_hint, cache_dir

    t = Table(title="embedded models (offline, from PyPI packages)")
    t.add_column("preset", style="bold")
    t.add_column("aliases")
    t.add_column("description")
    t.add_column("installed")
    seen = set()
    for p in PRESETS.values():
        if p.name in seen:
            continue
        seen.add(p.name)
        try:
            _chunk_paths(p)
            ok = "[green]yes[/]"
        except LeanthinkError:
            ok = f"[red]no[/] ({escape(_install_hint(p))})"
        t.add_row(p.name, ", ".join(p.aliases), p.description, ok)
    console.print(t)
    console.print(f"[dim]Cache: {cache_dir()}. Other models: a .gguf path, a Hugging Face id/dir, openai:BASE_URL#MODEL, vllm:ID.[/]")


@app.command()
def bench(
    model: Optional[str] = typer.Option(None, "--model", help="Model string (default: qwen2.5-coder-1.5b)."),
    dataset: str = typer.Option("builtin", "--dataset", "-d", help="gsm8k, math500, aime24, rg:TASK, jsonl:PATH?..., hf:ID (see `leanthink datasets`)."),
    methods_: str = typer.Option("think,direct", "--methods", help="Comma-separated method specs."),
    limit: Optional[int] = typer.Option(None, help="Use only the first N items."),
    seed: int = typer.Option(0, help="Seed for sampling methods and generated datasets."),
    temperature: float = typer.Option(0.0, help="Sampling temperature for single-chain methods (0 = greedy)."),
    concurrency: int = typer.Option(1, help="Items in flight at once (useful with HTTP backends)."),
    out: str = typer.Option("runs/bench", "--out", "-o", help="Results directory (resumable: rerun to continue)."),
    oracle: bool = typer.Option(True, "--oracle/--no-oracle", help="Run the oracle early-exit analysis on `think` chains."),
    oracle_max_probes: int = typer.Option(40, "--oracle-max-probes", min=2, help="At most this many cut points probed per chain (spread evenly)."),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="Directory with gsm8k_dev.jsonl etc. (or LEANTHINK_DATA_DIR)."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip malformed dataset lines (counted in the report) instead of failing."),
    report_: bool = typer.Option(True, "--report/--no-report", help="Write the report when done."),
    shard: Optional[str] = typer.Option(None, "--shard", help="I/N: run every N-th item starting at I, so N processes (or machines) can share one --out."),
    generation_cache: bool = typer.Option(False, "--generation-cache/--no-generation-cache", help="Replay chains already generated with the same prompt and seed (stored in OUT/generations.sqlite): sampling methods share sc's samples, as a paired comparison. Tokens are still counted in full; latency adds the recorded engine time of replayed chains."),
):
    """Run methods on a dataset; store every item; report accuracy vs tokens."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from .eval.runner import BenchConfig, command_line, run_bench

    specs = [m.strip() for m in _split_methods(methods_) if m.strip()]
    cfg = BenchConfig(model=model or "qwen2.5-coder-1.5b", dataset=dataset, methods=specs, out=out, limit=limit,
                      seed=seed, temperature=temperature, concurrency=concurrency, oracle=oracle,
                      oracle_max_probes=oracle_max_probes, shard=shard, generation_cache=generation_cache,
                      data_dir=data_dir, skip_bad=skip_bad, command=command_line())
    if limit is not None and limit <= 0:
        _fail(LeanthinkError(f"--limit must be a positive integer, got {limit}"))
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        console=err,
    )
    tasks: dict[str, int] = {}
    plain = not err.is_terminal  # logs and CI: a line every few items instead of a live bar
    t_start = time.time()

    def on_progress(st: dict) -> None:
        if plain:
            _plain_progress(st, t_start)
            return
        if "oracle_total" in st:
            if "oracle" not in tasks:
                tasks["oracle"] = progress.add_task("oracle probes", total=st["oracle_total"], stats="")
            progress.update(tasks["oracle"], completed=st["oracle_done"])
            return
        if "items" not in tasks:
            tasks["items"] = progress.add_task("bench", total=st["total"], completed=st["done"], stats="")
            if st["done"]:
                err.print(f"[dim]resuming: {st['done']} of {st['total']} (method, item) pairs already stored in {out}[/]")
        acc = f"acc {st['correct'] / st['new']:.1%}" if st["new"] else "acc –"
        progress.update(tasks["items"], completed=st["done"], stats=f"{acc} · {st['tokens']:,} tok (this run)")

    try:
        with progress:
            store = run_bench(cfg, on_progress=on_progress)
    except LeanthinkError as exc:
        _fail(exc)
        return
    except KeyboardInterrupt:
        err.print(f"[yellow]interrupted[/]: finished items are saved in {out}; rerun the same command to continue.")
        raise typer.Exit(130)
    ds = store.get_meta("dataset", {})
    if ds.get("skipped"):
        err.print(f"[yellow]skipped {len(ds['skipped'])} malformed dataset line(s)[/] (listed in the report)")
    if report_:
        _print_report(out)


def _plain_progress(st: dict, t_start: float) -> None:
    if "oracle_total" in st:
        n, total = st["oracle_done"], st["oracle_total"]
        if n == total or n % 10 == 0:
            err.print(f"oracle probes {n}/{total} · {time.time() - t_start:.0f}s", highlight=False)
        return
    if st.get("last") is None:
        if st["done"]:
            err.print(f"resuming: {st['done']} of {st['total']} (method, item) pairs already stored", highlight=False)
        return
    if st["new"] % 10 == 0 or st["done"] == st["total"]:
        rate = (time.time() - t_start) / max(st["new"], 1)
        eta = rate * (st["total"] - st["done"])
        err.print(f"bench {st['done']}/{st['total']} · acc {st['correct'] / st['new']:.1%} · {st['tokens']:,} tok "
                  f"(this run) · {time.time() - t_start:.0f}s · ETA {eta:.0f}s", highlight=False)


def _split_methods(s: str) -> list[str]:
    from .methods.base import _split_top

    return _split_top(s, ",")


def _print_report(directory: str, html: Optional[str] = None, baseline: str = "think") -> None:
    from .eval.report import build_report

    paths = build_report(directory, html=html, baseline=baseline)
    summary = json.loads(paths["summary"].read_text()) if "summary" in paths else None
    if summary:
        _summary_table(summary, title=f"results in {directory}")
    for k, p in paths.items():
        console.print(f"[dim]{k}: {p}[/]")


def _fmt_pct(x) -> str:
    return "–" if x is None or x != x else f"{100 * x:.1f}%"


def _fmt_num(x, nd=0) -> str:
    return "–" if x is None or x != x else f"{x:,.{nd}f}"


def _ratio(x) -> str:
    return "–" if x is None or x != x else f"{x:.2f}×"


def _summary_table(summary: dict, title: str) -> None:
    t = Table(title=title)
    for col in ("method", "n", "accuracy (95% CI)", "mean tokens", "vs baseline", "vs oracle", "flips -/+", "p50 s"):
        t.add_column(col, justify="right" if col != "method" else "left")
    for m, v in summary["methods"].items():
        vb = v.get("vs_baseline") or {}
        lo, hi = v["accuracy_ci"]
        t.add_row(
            m + (" *" if m in summary.get("pareto", []) else ""), str(v["n"]),
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


@app.command()
def report(
    directory: str = typer.Argument(..., help="A `leanthink bench --out` directory."),
    html: Optional[str] = typer.Option(None, "--html", help="Where to write the HTML report (default: DIR/report.html)."),
    baseline: str = typer.Option("think", "--baseline", help="Method the others are compared with (token ratio, flips, McNemar), e.g. 'sc(k=8)'."),
):
    """Rebuild the HTML/markdown/JSON report from stored results only."""
    try:
        _print_report(directory, html, baseline)
    except LeanthinkError as exc:
        _fail(exc)


@app.command()
def compare(
    dir_a: str = typer.Argument(..., help="Results directory A (before)."),
    dir_b: str = typer.Argument(..., help="Results directory B (after)."),
):
    """Compare two benchmark directories method by method, on their common items."""
    from .eval.metrics import mcnemar_exact
    from .eval.store import Store

    try:
        a, b = Store(dir_a, create=False), Store(dir_b, create=False)
    except LeanthinkError as exc:
        _fail(exc)
        return
    ra = {(r["method"], r["item_id"], r["seed"]): r for r in a.records()}
    rb = {(r["method"], r["item_id"], r["seed"]): r for r in b.records()}
    t = Table(title=f"{dir_a} → {dir_b} (common items only)")
    for col in ("method", "n", "accuracy A", "accuracy B", "tokens A", "tokens B", "token ratio", "flips -/+", "McNemar p"):
        t.add_column(col, justify="right" if col != "method" else "left")
    methods_all = sorted({k[0] for k in ra} | {k[0] for k in rb})
    for m in methods_all:
        keys = [k for k in ra if k[0] == m and k in rb]
        if not keys:
            t.add_row(m, "0", "–", "–", "–", "–", "–", "–", "–")
            continue
        n = len(keys)
        acc_a = sum(ra[k]["correct"] for k in keys) / n
        acc_b = sum(rb[k]["correct"] for k in keys) / n
        tok_a = sum(ra[k]["usage"]["total"] for k in keys) / n
        tok_b = sum(rb[k]["usage"]["total"] for k in keys) / n
        lost = sum(1 for k in keys if ra[k]["correct"] and not rb[k]["correct"])
        won = sum(1 for k in keys if not ra[k]["correct"] and rb[k]["correct"])
        t.add_row(m, str(n), _fmt_pct(acc_a), _fmt_pct(acc_b), _fmt_num(tok_a), _fmt_num(tok_b),
                  f"{tok_b / tok_a:.2f}×" if tok_a else "–", f"{lost}/{won}", f"{mcnemar_exact(lost, won):.3g}")
    console.print(t)


@app.command()
def datasets():
    """List the built-in dataset names."""
    from .data import list_datasets

    t = Table(title="datasets")
    t.add_column("spec", style="bold")
    t.add_column("description")
    for name, desc in list_datasets():
        t.add_row(name, desc)
    console.print(t)


from .server.cli import serve  # noqa: E402

app.command()(serve)


def _register_probe_commands() -> None:
    from .probes import probe_train_command

    probe_app = typer.Typer(help="Linear probes on hidden states, for the probe-exit method.", no_args_is_help=True)
    probe_app.command("train")(probe_train_command)
    app.add_typer(probe_app, name="probe")


_register_probe_commands()


def main() -> None:
    try:
        app()
    except LeanthinkError as exc:  # errors raised outside a command's own handler
        err.print(f"[bold red]error:[/] {escape(str(exc))}")
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]")
        sys.exit(130)


if __name__ == "__main__":
    main()
