"""`leanthink` command line: parses options, calls the library, formats what it returns.

One vocabulary across commands: `--model MODEL`, `--method/-m SPEC` (one method: `solve`)
and `--methods/-m SPECS` (several: `bench`), `--concurrency N`, `--json`, `--out/-o DIR`,
`-h/--help`, `--version`. Help shows value placeholders (SPEC, N, DIR), never `<bool>`.
"""

from __future__ import annotations

import json
import sys
import time
from contextlib import nullcontext
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from . import __version__
from .errors import ConfigError, LeanthinkError

CONTEXT = {"help_option_names": ["-h", "--help"]}

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Make reasoning models spend fewer tokens for the same accuracy.",
    pretty_exceptions_enable=False,
    context_settings=CONTEXT,
)
console = Console()
err = Console(stderr=True)


def _flags_without_types() -> None:
    """Typer's help prints a type column (`<int>`, `<bool>`); for on/off flags it says nothing
    a user needs (the flag is the value), so flags show no type. Options name their values
    with a metavar (N, SPEC, DIR) instead of `<int>`/`<str>`."""
    from typer.core import TyperArgument, TyperOption

    if getattr(TyperOption.display_type_rich, "_leanthink", False):
        return
    original = TyperOption.display_type_rich

    def display_type_rich(self, ctx):
        return None if self.is_flag else original(self, ctx)

    def no_type(self, ctx):  # an argument's name (QUESTION, DIR) already says what it is
        return None

    display_type_rich._leanthink = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]
    TyperArgument.display_type_rich = no_type  # type: ignore[method-assign]


_flags_without_types()


def _fail(exc: Exception) -> None:
    err.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
    raise typer.Exit(2)


def _version(value: bool) -> None:
    if value:
        print(f"leanthink {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", "-V", callback=_version, is_eager=True,
                                       help="Print the version and exit.")):
    """Make reasoning models spend fewer tokens for the same accuracy."""


MODEL_HELP = "Preset, .gguf path, HF id or openai:URL#NAME?template=... (see the README's model strings)."
DEFAULT_MODEL = "qwen2.5-coder-1.5b"  # = leanthink.models.DEFAULT_MODEL (checked by a test)


@app.command()
def solve(
    question: str = typer.Argument(..., metavar="QUESTION", help="The question to answer; - reads it from stdin."),
    method: str = typer.Option("think", "--method", "-m", metavar="SPEC", help="Method spec, e.g. think, direct, budget(max_thinking=256), chain-of-draft+deer."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", metavar="MODEL", help=MODEL_HELP),
    budget: Optional[int] = typer.Option(None, "--budget", "-b", metavar="N", help="Token budget for methods that have one."),
    seed: int = typer.Option(0, "--seed", metavar="N", help="Sampling seed."),
    temperature: float = typer.Option(0.0, "--temperature", metavar="T", help="Sampling temperature (0 = greedy)."),
    system: Optional[str] = typer.Option(None, "--system", metavar="TEXT", help="System prompt."),
    answer_format: str = typer.Option("boxed", "--answer-format", metavar="boxed|natural", help="boxed: the grading form (as bench); natural: when thinking is cut, the model writes its own final answer."),
    as_json: bool = typer.Option(False, "--json", help="Print the Result as JSON."),
    show_reasoning: bool = typer.Option(True, "--reasoning/--no-reasoning", help="Show or hide the reasoning."),
):
    """Answer one question and show answer, reasoning and token usage."""
    from . import api

    try:
        question = _read_question(question)
        # Resolved here only to word a budget error as `--budget` and to label the spinner;
        # `api.solve` does the work.
        m = api.resolve_method(method, budget, budget_name="--budget")
        be = api.get_backend(model, quiet=as_json)
        with nullcontext() if as_json else err.status(f"[dim]{escape(m.spec)} on {escape(be.model_id)}…", spinner="dots"):
            res = api.solve(question, m, backend=be, seed=seed, temperature=temperature, system=system,
                            answer_format=answer_format)
    except LeanthinkError as exc:
        _fail(exc)
        return
    if as_json:
        print(res.model_dump_json(indent=2))
        return
    _print_result(res, show_reasoning)


def _read_question(question: str) -> str:
    """The question, from stdin for `-`; an empty one fails before any model loads."""
    if question == "-":
        question = sys.stdin.read()
    if not question.strip():
        raise ConfigError("the question is empty" + (" (nothing on stdin)" if question == "" else ""))
    return question


def _print_result(res, show_reasoning: bool) -> None:
    if show_reasoning and res.reasoning:
        label = "reasoning (emulated thinking)" if res.emulated_thinking else "reasoning"
        console.print(Panel(Text(res.reasoning), title=label, border_style="dim", title_align="left"))
    answer = Text("Answer: ", style="bold")
    answer.append(res.answer if res.answer is not None else "(none found)", style="" if res.answer is not None else "red")
    console.print(answer)
    if res.content and res.content != (res.answer or ""):
        console.print(Text(res.content, style="dim"))
    u = res.usage
    console.print(Text(
        f"{res.method} · {res.model} ({res.backend}) · thinking {u.thinking} · answer {u.answer} · forced {u.forced} · "
        f"overhead {u.overhead} · total {u.total} tokens · {res.latency_s:.1f}s · finish {res.finish_reason}", style="dim"))
    for ev in res.trace:
        console.print(Text(f"  trace: {ev.describe()}", style="dim"))


def _method_rows(names: list[str]) -> list[dict]:
    from .methods import REGISTRY

    rows = []
    for name in names:
        cls = REGISTRY[name]
        params = {
            k: {"default": f.default, "description": f.description or "", "type": getattr(f.annotation, "__name__", str(f.annotation))}
            for k, f in cls.Params.model_fields.items()
        }
        rows.append({"name": name, "kind": cls.kind, "summary": cls.summary, "reference": cls.reference,
                     "needs": sorted(cls.needs), "budget_param": cls.budget_param, "params": params})
    return rows


@app.command()
def methods(
    name: Optional[str] = typer.Argument(None, metavar="NAME", help="Show this method only, with every parameter."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
):
    """List the registered methods and their parameters (or one method: leanthink methods deer)."""
    from .methods import REGISTRY, ensure_loaded, get_method

    ensure_loaded()
    if name is not None:
        try:
            m = get_method(name)  # a spec works too: `leanthink methods 'budget(max_thinking=256)'`
        except LeanthinkError as exc:
            _fail(exc)
            return
        target = m.budget_target()
        row = _method_rows([target.name])[0]
        if as_json:
            print(json.dumps(row, indent=2, default=str))
            return
        _show_method(row)
        return
    rows = _method_rows(sorted(REGISTRY))
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return
    t = Table(title="leanthink methods")
    for col in ("method", "kind", "what it does"):
        t.add_column(col, style="bold" if col == "method" else None)
    for r in rows:
        t.add_row(r["name"], r["kind"], r["summary"])
    console.print(t)
    console.print("[dim]Parameters and defaults of one method: leanthink methods NAME. Combine a prompt-level method "
                  "with another: chain-of-draft+deer. Set parameters: budget(max_thinking=256).[/]")


def _show_method(r: dict) -> None:
    console.print(Text(f"{r['name']} ({r['kind']})", style="bold"))
    console.print(r["summary"])
    if r["reference"]:
        console.print(Text(r["reference"], style="dim"))
    if r["needs"]:
        console.print(f"needs: {', '.join(r['needs'])}")
    if r["budget_param"]:
        console.print(f"--budget N sets {r['budget_param']}")
    if not r["params"]:
        console.print("parameters: none")
        return
    t = Table(show_lines=False)
    for col in ("parameter", "default", "type", "description"):
        t.add_column(col)
    for k, v in r["params"].items():
        t.add_row(k, escape(repr(v["default"]) if isinstance(v["default"], str) else str(v["default"])), v["type"],
                  escape(v["description"]))
    console.print(t)
    first = next(iter(r["params"]))
    console.print(Text(f"e.g. {r['name']}({first}={r['params'][first]['default']!s})", style="dim"))


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
            ok = f"[red]no[/]: {escape(_install_hint(p))}"
        t.add_row(p.name, ", ".join(p.aliases), p.description, ok)
    console.print(t)
    console.print(f"[dim]Cache: {escape(str(cache_dir()))}. Other models: a .gguf path, a Hugging Face id/dir, openai:BASE_URL#MODEL, vllm:ID.[/]")


# -- bench -------------------------------------------------------------------------------------------
@app.command()
def bench(
    model: str = typer.Option(DEFAULT_MODEL, "--model", metavar="MODEL", help=MODEL_HELP),
    dataset: str = typer.Option("builtin", "--dataset", "-d", metavar="DATASET", help="gsm8k, math500, aime24, rg:TASK, jsonl:PATH?..., hf:ID (see `leanthink datasets`)."),
    methods_: str = typer.Option("think,direct", "--methods", "-m", metavar="SPECS", help="Comma-separated method specs."),
    method_alias: Optional[str] = typer.Option(None, "--method", hidden=True),
    limit: Optional[int] = typer.Option(None, "--limit", metavar="N", help="Use only the first N items."),
    seed: int = typer.Option(0, "--seed", metavar="N", help="Seed for sampling methods and generated datasets."),
    temperature: float = typer.Option(0.0, "--temperature", metavar="T", help="Sampling temperature for single-chain methods (0 = greedy)."),
    concurrency: int = typer.Option(1, "--concurrency", metavar="N", help="Items in flight at once (useful with HTTP backends)."),
    out: Optional[str] = typer.Option(None, "--out", "-o", metavar="DIR", help="Results directory, resumable: rerun to continue. Default: runs/DATASET-MODEL."),
    oracle: bool = typer.Option(True, "--oracle/--no-oracle", help="Run the oracle early-exit analysis on `think` chains."),
    oracle_max_probes: int = typer.Option(40, "--oracle-max-probes", metavar="N", min=2, help="At most this many cut points probed per chain (spread evenly)."),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", metavar="DIR", help="Directory with gsm8k_dev.jsonl etc. (or LEANTHINK_DATA_DIR)."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip malformed dataset lines (counted in the report) instead of failing."),
    report_: bool = typer.Option(True, "--report/--no-report", help="Write the report when done."),
    shard: Optional[str] = typer.Option(None, "--shard", metavar="I/N", help="Run every N-th item starting at I, so N processes (or machines) can share one --out."),
    force: bool = typer.Option(False, "--force", help="Write into a non-empty --out that holds no leanthink results (its report files may be replaced)."),
    generation_cache: bool = typer.Option(False, "--generation-cache/--no-generation-cache", help="Replay chains already generated with the same prompt and seed (stored in OUT/generations.sqlite): sampling methods share sc's samples, as a paired comparison. Tokens are still counted in full; latency adds the recorded engine time of replayed chains."),
):
    """Run methods on a dataset; store every item; report accuracy vs tokens."""
    from .eval.runner import BenchConfig, command_line, default_out, run_bench

    if method_alias is not None:
        methods_ = method_alias  # `--method` (singular, as `solve` spells it) means the same
    out = out or default_out(dataset, model, seed, temperature)
    specs = [m.strip() for m in _split_methods(methods_) if m.strip()]
    cfg = BenchConfig(model=model, dataset=dataset, methods=specs, out=out, limit=limit,
                      seed=seed, temperature=temperature, concurrency=concurrency, oracle=oracle,
                      oracle_max_probes=oracle_max_probes, shard=shard, generation_cache=generation_cache,
                      data_dir=data_dir, skip_bad=skip_bad, command=command_line(), force=force)
    if limit is not None and limit <= 0:
        _fail(LeanthinkError(f"--limit must be a positive integer, got {limit}"))
    progress, on_progress = _bench_progress(out)
    try:
        with progress:
            store = run_bench(cfg, on_progress=on_progress)
    except LeanthinkError as exc:
        _fail(exc)
        return
    except KeyboardInterrupt:
        err.print(f"[yellow]interrupted[/]: finished items are saved in {escape(out)}; rerun the same command to continue.")
        raise typer.Exit(130)
    ds = store.get_meta("dataset", {})
    if ds.get("skipped"):
        err.print(f"[yellow]skipped {len(ds['skipped'])} malformed dataset line(s)[/] (listed in the report)")
    if report_:
        _print_report(out, force=force)


def _bench_progress(out: str):
    """(a rich Progress to enter, the `on_progress` callback for `run_bench`): live bars on a
    terminal; in logs and CI, a plain line every few items instead."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        console=err,
    )
    tasks: dict[str, int] = {}
    plain = not err.is_terminal
    t_start = time.time()

    def on_progress(st: dict) -> None:
        if plain:
            _plain_progress(st, t_start, out)
            return
        if "oracle_total" in st:
            if "oracle" not in tasks:
                tasks["oracle"] = progress.add_task("oracle probes", total=st["oracle_total"], stats="")
            progress.update(tasks["oracle"], completed=st["oracle_done"])
            return
        if "items" not in tasks:
            tasks["items"] = progress.add_task("bench", total=st["total"], completed=st["done"], stats="")
            if st["done"]:
                err.print(f"[dim]resuming: {st['done']} of {st['total']} (method, item) pairs already stored in {escape(out)}[/]")
        progress.update(tasks["items"], completed=st["done"], stats=escape(progress_stats(st)))

    return progress, on_progress


def progress_stats(st: dict, max_methods: int = 4) -> str:
    """Accuracy per method over every stored pair of this bench (earlier runs included, so
    after a resume the numbers are the true ones), and this run's tokens. With many methods,
    the overall accuracy and the method that just finished an item."""
    tallies = {m: (c, n) for m, (c, n) in (st.get("by_method") or {}).items() if n}
    if len(tallies) <= max_methods:
        parts = [f"{m} {c / n:.0%} ({n})" for m, (c, n) in tallies.items()]
    else:
        c_all, n_all = sum(c for c, _ in tallies.values()), sum(n for _, n in tallies.values())
        parts = [f"all methods {c_all / n_all:.0%} ({n_all})"]
        last = (st.get("last") or {}).get("method")
        if last in tallies:
            c, n = tallies[last]
            parts.append(f"{last} {c / n:.0%} ({n})")
    return " · ".join(parts or ["acc –"]) + f" · {st['tokens']:,} tok (this run)"


def _plain_progress(st: dict, t_start: float, out: str = "") -> None:
    if "oracle_total" in st:
        n, total = st["oracle_done"], st["oracle_total"]
        if n == total or n % 10 == 0:
            err.print(f"oracle probes {n}/{total} · {time.time() - t_start:.0f}s", highlight=False)
        return
    if st.get("last") is None:
        err.print(f"results: {out}" + (f" (resuming: {st['done']} of {st['total']} (method, item) pairs already stored)"
                                       if st["done"] else ""), highlight=False, markup=False)
        return
    if st["new"] % 10 == 0 or st["done"] == st["total"]:
        rate = (time.time() - t_start) / max(st["new"], 1)
        eta = rate * (st["total"] - st["done"])
        err.print(f"bench {st['done']}/{st['total']} · {progress_stats(st)} · {time.time() - t_start:.0f}s · ETA {eta:.0f}s",
                  highlight=False, markup=False)


def _split_methods(s: str) -> list[str]:
    from .methods.base import _split_top

    return _split_top(s, ",")


def _print_report(directory: str, html: Optional[str] = None, baseline: str = "think", force: bool = False) -> None:
    from .cli_format import summary_table
    from .eval.report import build_report

    paths = build_report(directory, html=html, baseline=baseline, force=force)
    summary = json.loads(paths["summary"].read_text()) if "summary" in paths else None
    if summary:
        summary_table(console, summary, title=f"results in {directory}")
    for k, p in paths.items():
        console.print(Text(f"{k}: {p}", style="dim"))


@app.command()
def report(
    directory: str = typer.Argument(..., metavar="DIR", help="A `leanthink bench --out` directory."),
    html: Optional[str] = typer.Option(None, "--html", metavar="PATH", help="Where to write the HTML report (default: DIR/report.html)."),
    baseline: str = typer.Option("think", "--baseline", metavar="SPEC", help="Method the others are compared with (token ratio, flips, McNemar), e.g. 'sc(k=8)'."),
    force: bool = typer.Option(False, "--force", help="Replace report files that leanthink did not write."),
):
    """Rebuild the HTML/markdown/JSON report from stored results only."""
    try:
        _print_report(directory, html, baseline, force)
    except LeanthinkError as exc:
        _fail(exc)


@app.command()
def compare(
    dir_a: str = typer.Argument(..., metavar="DIR_A", help="Results directory A (before)."),
    dir_b: str = typer.Argument(..., metavar="DIR_B", help="Results directory B (after)."),
    map_: Optional[List[str]] = typer.Option(None, "--map", metavar="A=B", help="Compare method A of DIR_A with method B of DIR_B (repeatable), e.g. --map 'budget=budget(max_thinking=256)'. Without it, methods are matched by name."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
):
    """Compare two benchmark directories method by method, paired on their common items."""
    from .cli_format import render_compare
    from .eval.compare import compare_runs

    try:
        result = compare_runs(dir_a, dir_b, map_ or [])
    except LeanthinkError as exc:
        _fail(exc)
        return
    if as_json:
        print(json.dumps(result, indent=2, default=str))
        return
    render_compare(console, result)


@app.command()
def datasets():
    """List the built-in dataset names."""
    from .data import list_datasets

    t = Table(title="datasets")
    t.add_column("spec", style="bold")
    t.add_column("description")
    for name, desc in list_datasets():
        t.add_row(escape(name), escape(desc))
    console.print(t)


from .server.cli import serve  # noqa: E402

app.command()(serve)


def _register_probe_commands() -> None:
    from .probes import probe_train_command

    probe_app = typer.Typer(help="Linear probes on hidden states, for the probe-exit method.", no_args_is_help=True)
    probe_app.command("train")(probe_train_command)
    app.add_typer(probe_app, name="probe")


_register_probe_commands()


def _register_train_commands() -> None:
    from .train.cli import app as train_app

    app.add_typer(train_app, name="train")


_register_train_commands()


def main() -> None:
    try:
        app()
    except LeanthinkError as exc:  # errors raised outside a command's own handler
        err.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]")
        sys.exit(130)


if __name__ == "__main__":
    main()
