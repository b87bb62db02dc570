"""Benchmark report, rebuilt from the results store alone.

Why from the store only: a report must be reproducible at any time (after a crash, on
another machine, after a metrics fix) from the one file `leanthink bench` commits to, so
nothing here talks to a model. Three outputs from one `summarize()` call:

* `summary.json`: the numbers, for scripts and `leanthink compare` (NaN written as null);
* `report.md`: command, setup and tables, for a quick read or a pull request;
* `report.html` (Jinja2 template `templates/report.html.j2`, autoescaped): ONE self-contained file (inline CSS, figures as base64 PNG, no URL) that
  can be mailed or archived and still opens offline years later, with a per-item
  drill-down so a surprising number can be traced to the chains behind it.
"""

from __future__ import annotations

import base64
import io
import json
import math
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError, LeanthinkError, require
from ..models import redact, redact_obj
from . import views
from .metrics import summarize
from .store import Store

META_KEYS = ("config", "versions", "dataset", "backend", "commands")
DASH = "–"


@dataclass
class _Data:
    """Everything a renderer needs, read once: renderers never touch the store."""

    records: list[dict]
    oracle: list[dict]
    meta: dict[str, Any]
    summary: dict[str, Any]

    @property
    def emulated(self) -> bool:
        backend = self.meta.get("backend") or {}
        return bool(backend.get("emulated_thinking")) or any(r.get("emulated_thinking") for r in self.records)


def build_report(directory: str | Path, *, html: str | Path | None = None, baseline: str = "think",
                 force: bool = False) -> dict[str, Path]:
    """Write summary.json, report.md and the HTML report for a bench directory.

    Returns {"summary", "markdown", "html"} -> path. Raises ConfigError when the
    directory holds no results, so the CLI prints a message instead of a traceback.
    `baseline` is the method every other one is compared with (ratios, flips, McNemar):
    `think` by default, e.g. `sc(k=8)` for sampling methods. If `think` is absent the
    report simply has no baseline; a baseline you name must exist. A file in the way that
    this report did not write (no leanthink signature) is not overwritten unless `force`.
    """
    directory = Path(directory)
    records, oracle, meta = _load(directory)
    present = sorted({r["method"] for r in records})
    if baseline != "think" and baseline not in present:
        from ..methods import get_method

        try:  # accept any spelling of the spec: sc(k=8) is stored as sc(k=8), budget(...) in canonical order
            baseline = get_method(baseline).spec
        except LeanthinkError:
            pass
        if baseline not in present:
            raise ConfigError(f"baseline '{baseline}' is not in {directory}; methods there: {', '.join(present)}")
    if baseline != "think":
        oracle = []  # the oracle analyses `think` chains; it is not about another baseline
    data = _Data(records, oracle, meta, summarize(records, oracle=oracle, baseline=baseline))
    paths = {"summary": directory / "summary.json", "markdown": directory / "report.md",
             "html": Path(html) if html is not None else directory / "report.html", "plot": directory / "pareto.png"}
    if not force:
        _refuse_foreign(paths)
    # Everything is rendered before the first write: a failure leaves no half-written report.
    doc = {**data.summary, **meta}
    # The Pareto plot also as a file, so a README or an issue can show it without the HTML.
    out = {"plot": base64.b64decode(_fig_pareto(data).split(",", 1)[1]),
           "summary": (json.dumps(_no_nan(doc), indent=2, allow_nan=False) + "\n").encode("utf-8"),
           "markdown": _markdown(data).encode("utf-8"), "html": _html_doc(data).encode("utf-8")}
    try:
        paths["html"].parent.mkdir(parents=True, exist_ok=True)
        for key, blob in out.items():
            paths[key].write_bytes(blob)
    except OSError as exc:
        raise ConfigError(f"cannot write the report ({exc.filename or directory}): {exc.strerror or exc}") from None
    return paths


_SIGNATURES = {"markdown": b"# leanthink benchmark report", "html": b"<title>leanthink report</title>"}


def _ours(key: str, path: Path) -> bool:
    """Does this existing file look like one a leanthink report wrote?"""
    try:
        with path.open("rb") as f:
            head = f.read(4096)
            if key == "summary":
                doc = json.loads(head + f.read(1 << 24))
                return isinstance(doc, dict) and {"baseline", "methods", "pareto"} <= doc.keys()
    except (OSError, ValueError):
        return False
    if key == "plot":  # PNG whose tEXt says who wrote it: this report (or Matplotlib before it said so)
        return head.startswith(b"\x89PNG") and (b"leanthink" in head or b"Matplotlib" in head)
    return _SIGNATURES[key] in head


def _refuse_foreign(paths: dict[str, Path]) -> None:
    for key, path in paths.items():
        if path.exists() and (not path.is_file() or not _ours(key, path)):
            raise ConfigError(f"'{path}' exists and was not written by leanthink report; move it away, "
                              "choose another path, or pass --force to overwrite it")


def _load(directory: Path) -> tuple[list[dict], list[dict], dict[str, Any]]:
    """Read records, oracle rows and meta; an empty store is a user error, not a blank report."""
    with closing(Store(directory, create=False)) as store:
        records, oracle = store.records(), store.oracle()
        # Stores written before redaction may hold an upstream key in a model string or a
        # command line: reports (and summary.json) never show it.
        meta = redact_obj({k: store.get_meta(k) for k in META_KEYS})
    for r in records:
        if r.get("error"):
            r["error"] = redact(r["error"])
    if not records:
        raise ConfigError(f"'{directory}' holds no finished items yet; run `leanthink bench --out {directory}` first")
    return records, oracle, meta


def _no_nan(x: Any) -> Any:
    """NaN/inf -> None: strict JSON that any tool can read (Python's NaN token is not JSON)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _no_nan(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_no_nan(v) for v in x]
    return x


# -- formatting ----------------------------------------------------------------------
def _ok(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _f(x: Any, spec: str = ".0f", scale: float = 1.0, suffix: str = "") -> str:
    """One number as text; missing or NaN becomes a dash so no table shows 'nan'."""
    return f"{x * scale:{spec}}{suffix}" if _ok(x) else DASH


def _pct(x: Any) -> str:
    return _f(x, ".1f", 100, " %")


def _key(r: dict) -> tuple[str, int]:
    return (r["item_id"], r["seed"])


# -- tables shared by markdown and HTML (plain text cells, escaped by each renderer) ----
def _method_table(s: dict) -> tuple[list[str], list[list[str]]]:
    """Metrics as rows, methods as columns: stays readable with long method specs."""
    methods, front, base = s["methods"], set(s["pareto"]), s["baseline"]
    header = ["metric"] + [m + (" ★" if m in front else "") for m in methods]

    def row(label: str, cell: Callable[[str, dict], str]) -> list[str]:
        return [label] + [cell(m, v) for m, v in methods.items()]

    def vsb(m: str, v: dict, fmt: Callable[[dict], str]) -> str:
        return fmt(v["vs_baseline"]) if "vs_baseline" in v else ("baseline" if m == base else DASH)

    def mean(p: str) -> Callable[[str, dict], str]:
        return lambda m, v: _f(v["tokens"][p]["mean"], ".1f")

    return header, [
        row("items (errors)", lambda m, v: f"{v['n']} ({v['errors']})"),
        row("grading errors", lambda m, v: str(v.get("grade_errors", 0))),
        row("accuracy [95% CI]", lambda m, v: f"{_pct(v['accuracy'])} [{_f(v['accuracy_ci'][0], '.1f', 100)}, "
                                              f"{_f(v['accuracy_ci'][1], '.1f', 100)}]"),
        row("mean total tokens", lambda m, v: _f(v["tokens"]["total"]["mean"], ".1f")),
        row("mean thinking tokens", mean("thinking")),
        row("mean answer tokens", mean("answer")),
        row("mean forced tokens", mean("forced")),
        row("mean overhead tokens", mean("overhead")),
        row("token ratio vs baseline", lambda m, v: vsb(m, v, lambda b: _f(b["token_ratio"], ".2f", suffix="×"))),
        row("token ratio vs oracle", lambda m, v: _f(v.get("token_ratio_vs_oracle"), ".2f", suffix="×")),
        row("flips right→wrong / wrong→right", lambda m, v: vsb(m, v, lambda b: f"{b['right_to_wrong']} / {b['wrong_to_right']}")),
        row("McNemar p (vs baseline)", lambda m, v: vsb(m, v, lambda b: _f(b["mcnemar_p"], ".3g"))),
        row("chains per item", lambda m, v: _f(v.get("samples_per_item"), ".2f")),
        row("latency p50 / p90 (s)", lambda m, v: f"{_f(v['latency_s']['p50'], '.2f')} / {_f(v['latency_s']['p90'], '.2f')}"),
        row("total wall time (s)", lambda m, v: _f(v["latency_s"]["mean"] * v["n"], ".0f")),
        row("accuracy per 1k tokens", lambda m, v: _f(v["accuracy_per_1k_tokens"], ".3f")),
        row("finish reasons", lambda m, v: ", ".join(f"{k} {n}" for k, n in sorted(v["finish_reasons"].items())) or DASH),
        row("on Pareto frontier", lambda m, v: "★ yes" if m in front else "no"),
    ]


def _oracle_rows(o: dict) -> list[list[str]]:
    """The floor every early-exit method is judged against, in words a reader can check."""
    return [
        ["items analysed", str(o["n"])],
        ["items with a pearl point (oracle accuracy)", _pct(o["share_with_pearl"])],
        ["baseline accuracy on these items", _pct(o["baseline_accuracy"])],
        ["mean tokens: oracle vs baseline", f"{_f(o['oracle_tokens_mean'], '.1f')} vs {_f(o['baseline_tokens_mean'], '.1f')} "
                                            f"({_f(o['oracle_vs_baseline'], '.2f', suffix='×')})"],
        ["mean pearl position (% of the chain)", _pct(o["pearl_position_mean"])],
        ["probes spent", f"{o['probes_total']} probes, {o['probe_tokens_total']} tokens"],
        ["wrong baseline answers rescued by an earlier exit", str(o["rescued"])],
    ]


def _info(d: _Data) -> list[tuple[str, str]]:
    """Who/what/which versions: what a reader needs to reproduce or distrust the numbers."""
    cfg, be, ds = d.meta.get("config") or {}, d.meta.get("backend") or {}, d.meta.get("dataset") or {}
    r0 = d.records[0]
    model = be.get("model_id") or cfg.get("model") or r0.get("model") or "?"
    items = {_key(r) for r in d.records}
    seeds = sorted({r["seed"] for r in d.records})
    dataset = f"{ds.get('name') or cfg.get('dataset') or '?'}" + (f" ({ds['source']})" if ds.get("source") else "")
    n_ds = f", {ds['n_items']} loaded from the dataset" if ds.get("n_items") is not None else ""
    out = [("model", model), ("backend", be.get("name") or r0.get("backend") or "?"),
           ("dataset", f"{dataset}: {len({i for i, _ in items})} items run{n_ds}; seed(s) {', '.join(map(str, seeds))}")]
    if cfg:
        out.append(("settings", f"temperature {cfg.get('temperature', '?')}, concurrency {cfg.get('concurrency', '?')}, "
                                f"oracle {'on' if cfg.get('oracle') else 'off'}"))
    if ds.get("skipped"):
        out.append(("skipped dataset lines", "; ".join(f"line {ln}: {why}" for ln, why in ds["skipped"][:20])
                    + (f"; … {len(ds['skipped']) - 20} more" if len(ds["skipped"]) > 20 else "")))
    out.append(("versions", ", ".join(f"{k} {v}" for k, v in (d.meta.get("versions") or {}).items()) or "not recorded"))
    return out


EMULATED_NOTE = ("Thinking was emulated: the model is an instruct model, not a reasoning model. Its own "
                 "step-by-step text up to the boxed answer is treated as the reasoning. Token savings may not "
                 "transfer to real reasoning models, whose chains are longer and more redundant.")
def _grade_errors_note(s: dict) -> str:
    """Why a non-zero grading-error count matters: those answers were never judged."""
    n = s.get("grade_errors", 0)
    which = ", ".join(f"{m} {v['grade_errors']}" for m, v in s["methods"].items() if v.get("grade_errors"))
    return (f"the grader (math-verify) failed on {n} answer(s) ({which}). They count as not correct, so the "
            "accuracy of these methods is a lower bound; the items below show each grader error.")


COST_NOTE = ("A latent step (a continuous thought) costs a forward pass but no token, and a method can hold "
             "more or less context than it writes: these columns show what a token count alone would hide.")
PARETO_NOTE = "★ = on the Pareto frontier of accuracy vs mean total tokens per item (overhead included)."


# -- markdown --------------------------------------------------------------------------
def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    cell = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    return lines + ["| " + " | ".join(map(cell, r)) + " |" for r in rows]


def _markdown(d: _Data) -> str:
    """The report as markdown: everything but figures and the per-item drill-down."""
    s = d.summary
    lines = ["# leanthink benchmark report", ""]
    if d.emulated:
        lines += [f"> **Note:** {EMULATED_NOTE}", ""]
    if s.get("grade_errors"):
        lines += [f"> **Grading errors:** {_grade_errors_note(s)}", ""]
    lines += ["## Command", "", "```", *(d.meta.get("commands") or ["(not recorded)"]), "```", "", "## Setup", ""]
    lines += [f"- **{k}:** {v}" for k, v in _info(d)]
    lines += ["", "## Methods", "", f"Baseline: `{s['baseline'] or 'none (no `think` run)'}`. {PARETO_NOTE}", ""]
    lines += _md_table(*_method_table(s))
    lines += ["", "![accuracy vs mean total tokens per item](pareto.png)"]
    lines += ["", "## Cost beyond tokens: latent steps, peak context, wall time", "", COST_NOTE, ""]
    lines += views.pareto_table(views.summary_rows(_by_method(d.records)))
    lines += ["", "## Oracle early exit", ""]
    if s["oracle"]:
        lines += _md_table(["oracle (first correct cut of each baseline chain)", "value"], _oracle_rows(s["oracle"]))
    else:
        lines.append("No oracle analysis in this directory (needs a `think` baseline and `--oracle`).")
    return "\n".join(lines) + "\n"


# -- figures ---------------------------------------------------------------------------
def _new_figure(w: float, h: float):
    """A figure on the Agg canvas directly: no pyplot global state, safe in any thread or server."""
    require("matplotlib", "plots", "the HTML report's figures")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h))
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": "leanthink report"})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _fig_pareto(d: _Data) -> str:
    """Accuracy vs tokens: the one picture that says which method is worth it."""
    fig, ax = _new_figure(6, 4.2)
    s, front = d.summary, d.summary["pareto"]
    for m, v in s["methods"].items():
        x, y, (lo, hi) = v["tokens"]["total"]["mean"], 100 * v["accuracy"], v["accuracy_ci"]
        if not (_ok(x) and _ok(y)):
            continue
        err = [[y - 100 * lo if _ok(lo) else 0], [100 * hi - y if _ok(hi) else 0]]
        ax.errorbar(x, y, yerr=err, fmt="o", capsize=4, color="#1f77b4" if m in front else "#888", zorder=3)
        ax.annotate(m, (x, y), xytext=(6, 6), textcoords="offset points", fontsize=8)
    pts = [(s["methods"][m]["tokens"]["total"]["mean"], 100 * s["methods"][m]["accuracy"]) for m in front]
    if pts:
        ax.plot(*zip(*pts), "-", color="#1f77b4", lw=2, alpha=0.6, label="Pareto frontier", zorder=2)
    o = s["oracle"]
    if o and _ok(o.get("oracle_tokens_mean")) and _ok(o.get("oracle_accuracy")):
        ax.plot(o["oracle_tokens_mean"], 100 * o["oracle_accuracy"], "*", ms=16, color="#d62728", ls="", label="oracle exit")
    ax.set_xlabel("mean total tokens per item (incl. overhead)")
    ax.set_ylabel("accuracy % (95% CI)")
    ax.grid(alpha=0.3)
    ax.margins(x=0.15, y=0.1)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")
    return _png(fig)


def _by_method(records: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in records:
        out.setdefault(r["method"], []).append(r)
    return out


def _fig_hist(d: _Data) -> str:
    """Per-item token spread: a mean hides whether a method saves everywhere or only on a few items."""
    import numpy as np

    fig, ax = _new_figure(6, 4.2)
    groups = _by_method(d.records)
    edges = np.histogram_bin_edges([r["usage"]["total"] for r in d.records], bins=30)
    for i, (m, rs) in enumerate(groups.items()):
        ax.hist([r["usage"]["total"] for r in rs], bins=edges, histtype="step", lw=1.8, label=m, color=f"C{i % 10}")
    ax.set_xlabel("total tokens per item")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel("items")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def _exit_points(d: _Data) -> dict[str, list[tuple[float, float]]]:
    """(oracle pearl thinking tokens, method thinking tokens) for every item that has a pearl."""
    pearls = {_key(o): o["pearl_thinking_tokens"] for o in d.oracle if o.get("pearl_thinking_tokens") is not None}
    pts: dict[str, list[tuple[float, float]]] = {}
    for r in d.records:
        if r["method"] != d.summary["baseline"] and not r.get("error") and _key(r) in pearls:
            pts.setdefault(r["method"], []).append((pearls[_key(r)], r["usage"]["thinking"]))
    return pts


def _fig_exit(d: _Data) -> str | None:
    """Where each method stopped vs where it could have stopped: below the diagonal = too early."""
    pts = _exit_points(d)
    if not pts:
        return None
    fig, ax = _new_figure(6, 4.2)
    top = max(max(x, y) for p in pts.values() for x, y in p) or 1
    ax.plot([0, top], [0, top], "--", color="#999", lw=1, label="y = x (exit at the pearl)")
    for i, (m, p) in enumerate(pts.items()):
        ax.scatter(*zip(*p), s=22, alpha=0.75, label=m, color=f"C{(i + 1) % 10}")
    ax.set_xlabel("oracle pearl point (thinking tokens)")
    ax.set_ylabel("method's thinking tokens")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


# -- HTML ------------------------------------------------------------------------------
def _templates():
    """The Jinja2 environment of the report templates (package data under eval/templates),
    autoescaping every value: model and user text can never become markup."""
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    return Environment(loader=PackageLoader("leanthink.eval", "templates"), autoescape=select_autoescape(["html", "j2"]),
                       undefined=StrictUndefined, keep_trailing_newline=True)


def _item_rows(recs: dict[str, dict]) -> list[dict[str, Any]]:
    return [{"method": m, "correct": bool(r["correct"]), "answer": r.get("answer") if r.get("answer") is not None else DASH,
             "error": r.get("error"), "grade_error": r.get("grade_error"), "total": r["usage"]["total"],
             "thinking": r["usage"]["thinking"], "finish": r.get("finish_reason", "?"), "reasoning": r.get("reasoning") or ""}
            for m, r in recs.items()]


def _items(d: _Data) -> list[dict[str, Any]]:
    """One entry per (item, seed): question, gold, oracle pearl and each method's answer and chain."""
    items: dict[tuple[str, int], dict[str, dict]] = {}
    for r in d.records:
        items.setdefault(_key(r), {})[r["method"]] = r
    oracle = {_key(o): o for o in d.oracle}
    show_seed = len({k[1] for k in items}) > 1
    out = []
    for key, recs in items.items():
        first = next(iter(recs.values()))
        out.append({"id": key[0], "seed": key[1], "show_seed": show_seed, "question": first.get("question", ""),
                    "gold": first.get("gold"), "pearl": oracle.get(key), "rows": _item_rows(recs)})
    return out


def _html_doc(d: _Data) -> str:
    """The full self-contained page (templates/report.html.j2)."""
    s = d.summary
    header, rows = _method_table(s)
    figures = [
        {"uri": _fig_pareto(d), "caption": "Accuracy vs mean total tokens (95% CI). Line: Pareto frontier; star: oracle exit."},
        {"uri": "data:image/png;base64," + views.pareto_figure(views.summary_rows(_by_method(d.records))),
         "caption": "Accuracy vs wall time per item and vs peak context (positions held in the KV cache)."},
        {"uri": _fig_hist(d), "caption": "Total tokens per item, by method."},
        {"uri": _fig_exit(d), "caption": "Exit point vs oracle pearl point, per item (non-baseline methods).",
         "missing": "No exit-vs-oracle plot: no oracle pearl points, or no non-baseline method ran on those items."},
    ]
    return _templates().get_template("report.html.j2").render(
        emulated=d.emulated, emulated_note=EMULATED_NOTE, grade_errors=s.get("grade_errors", 0),
        grade_errors_note=_grade_errors_note(s), commands="\n".join(d.meta.get("commands") or ["(not recorded)"]),
        info=_info(d), baseline=s["baseline"], pareto_note=PARETO_NOTE, method_header=header, method_rows=rows,
        figures=figures, oracle_rows=_oracle_rows(s["oracle"]) if s["oracle"] else None, items=_items(d))
