"""Linear probes on hidden states for `probe-exit` ("Reasoning Models Know When They're Right").

Training (`train_probe`, CLI `leanthink probe train`): for each training item, run a
greedy `think` chain; at every step end (the reasoning so far ends with the step
delimiter, `\\n\\n` by default) force the answer from that prefix (the same probe DEER
uses) and label the point 1 if that answer matches the gold answer, else 0. The feature
is the last-layer hidden state of the last token of `prompt + reasoning prefix`
(`backend.hidden_states_for(...)[-1]`), exactly what `probe-exit` computes at inference.
A logistic regression with L2 (scikit-learn, the `probe` extra) is fit on standardised features
of the training items; held-out items (split by item, not by point) give AUC/accuracy.

Probe file (read by `leanthink.probe_file.load_probe`, re-exported here): JSON,
`"format": "leanthink-probe/1"`:

  format           "leanthink-probe/1"
  model_id         backend.model_id the probe was trained on (probe-exit notes a mismatch)
  backend          engine name (e.g. transformers)
  layer            -1 = the last layer's hidden state, as the backend returns it
  position         "last token of prompt + reasoning prefix ending at a step delimiter"
  step_delimiter   "\\n\\n" (probe-exit checks at the same points)
  hidden_size      d
  mean, std        d floats each; features are standardised as (h - mean) / std
  weights, bias    d floats and a float: p(correct) = sigmoid(weights . (h - mean) / std + bias)
  l2               L2 strength of the fit (on the weights, not the bias)
  label            what class 1 means
  training         dataset, items (ids), heldout_items, question_sha1 (of every item used),
                   n_points, n_positive, single_class, max_thinking, max_points, seed, holdout
  metrics          train_auc, train_accuracy, heldout_auc, heldout_accuracy, heldout_points,
                   heldout_positive (null where undefined, e.g. AUC with one class)
  created, leanthink_version

A training set with a single class (all points right, or all wrong) gives a constant
probe: zero weights and the bias of the smoothed base rate, flagged `single_class`.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import numpy as np
import typer

from .errors import ConfigError, LeanthinkError, require
from .probe_file import FORMAT, LABEL, POSITION, LinearProbe, load_probe, question_hash


# --------------------------------------------------------------------------- fitting


def fit_logreg(X: np.ndarray, y: np.ndarray, l2: float = 1.0, iters: int = 200):
    """L2-regularised logistic regression (scikit-learn) on standardised features: minimises
    sum(log loss) + l2/2 * |w|^2, the bias unpenalised. Returns (weights, bias, mean, std,
    single_class); one class only gives zero weights and the smoothed base rate as bias."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n, d = X.shape
    mean = X.mean(axis=0)
    std = X.std(axis=0)
    std[std < 1e-6] = 1.0
    pos = float(y.sum())
    if pos == 0 or pos == n:
        rate = (pos + 1) / (n + 2)
        return np.zeros(d), math.log(rate / (1 - rate)), mean, std, True
    linear_model = require("sklearn.linear_model", "probe", "probe training")
    # scikit-learn minimises |w|^2/2 + C * sum(log loss): C = 1 / l2 is the same objective.
    clf = linear_model.LogisticRegression(C=1.0 / l2, solver="newton-cholesky", max_iter=iters, tol=1e-8)
    clf.fit((X - mean) / std, y.astype(int))
    return clf.coef_[0].astype(np.float64), float(clf.intercept_[0]), mean, std, False


def auc(scores: Iterable[float], labels: Iterable[int]) -> float | None:
    """Area under the ROC curve (Mann-Whitney, ties count half); None with one class."""
    s = np.asarray(list(scores), dtype=np.float64)
    y = np.asarray(list(labels), dtype=int)
    pos, neg = s[y == 1], s[y == 0]
    if len(pos) == 0 or len(neg) == 0:
        return None
    gt = (pos[:, None] > neg[None, :]).sum()
    eq = (pos[:, None] == neg[None, :]).sum()
    return float((gt + 0.5 * eq) / (len(pos) * len(neg)))


# --------------------------------------------------------------------------- data


def hidden_state_backend(model):
    """A backend with hidden states: a backend as is, or a model string. Presets and .gguf
    files are opened with transformers (llama.cpp does not expose hidden states)."""
    from .backends.base import BaseBackend

    if isinstance(model, BaseBackend) or hasattr(model, "hidden_states_for"):
        be = model
    else:
        from .models import PRESETS, ensure_preset_file, parse_model_string

        spec = parse_model_string(model)
        if spec.kind in ("preset", "gguf"):
            from .backends.transformers_backend import TransformersBackend

            if spec.kind == "preset":
                preset = PRESETS[spec.target]
                path, mid = str(ensure_preset_file(preset, quiet=True)), preset.name
            else:
                path, mid = spec.target, spec.target
            be = TransformersBackend(path, model_id=mid, threads=spec.options.get("threads"))
            be.family_override = spec.options.get("family")
        else:
            from .loading import default_loader

            be = default_loader().backend(model)
    be.require({"hidden_states", "prefix_continuation"}, "probe training")
    return be


def _items(dataset, n_items: int, offset: int, data_dir: str | None, seed: int):
    from .data import Item, load_dataset

    if isinstance(dataset, str):
        ds = load_dataset(dataset, limit=offset + n_items, data_dir=data_dir, seed=seed)
        items = ds.items[offset: offset + n_items]
        name = dataset
    else:
        items = []
        for i, x in enumerate(list(dataset)[offset: offset + n_items]):
            if isinstance(x, Item):
                items.append(x)
            elif isinstance(x, dict):
                items.append(Item(str(x.get("id", f"item/{i}")), x["question"], str(x["answer"]), x.get("kind", "math")))
            else:
                q, a = x[0], x[1]
                items.append(Item(f"item/{offset + i}", q, str(a), "math"))
        name = "(given items)"
    if not items:
        raise ConfigError(f"no training items: the dataset has none after offset {offset}")
    return name, items


def collect_points(backend, item, *, max_thinking: int, max_points: int, delimiter: str, seed: int = 0):
    """(features [n, d], labels [n], answers) at the step ends of one greedy think chain."""
    from .grading import grade
    from .methods import Task
    from .methods.engine import Chain, build_prompt

    task = Task.create(item.question, backend, seed=seed, temperature=0.0)
    prompt = build_prompt(task)
    chain = Chain(task)
    cuts: list[str] = []

    def record(s):
        text = s.reasoning
        if text.endswith(delimiter) and text.strip() and (not cuts or cuts[-1] != text):
            cuts.append(text)
        return None

    chain.run(prompt, max_thinking=max_thinking, controller=record)
    if len(cuts) > max_points:
        idx = np.unique(np.linspace(0, len(cuts) - 1, max_points).round().astype(int))
        cuts = [cuts[i] for i in idx]
    feats, labels, answers = [], [], []
    for cut in cuts:
        probe = chain.probe(prompt, cut)
        labels.append(int(grade(probe.answer, item.answer, item.kind)))
        answers.append(probe.answer)
        feats.append(np.asarray(backend.hidden_states_for(prompt + cut)[-1], dtype=np.float64))
    return feats, labels, answers


def train_probe(model, dataset="gsm8k", n_items: int = 100, out_path: str | Path = "probe.json", *,
                offset: int = 0, data_dir: str | None = None, max_thinking: int = 512, max_points: int = 8,
                holdout: float = 0.25, l2: float = 1.0, seed: int = 0, delimiter: str = "\n\n",
                progress: Optional[Callable[[str], None]] = None) -> dict[str, Any]:
    """Train a probe and save it to `out_path` (format in the module docstring).

    `model`: a backend with hidden states (e.g. `TransformersBackend`) or a model string
    (presets and .gguf files are opened with transformers). `dataset`: a dataset spec
    (`gsm8k`, ...) or a list of Items / (question, answer) pairs / dicts. Items
    [offset, offset + n_items) are used: keep `offset` >= the bench's `--limit` so the
    evaluation items are not training items. Returns the saved dict."""
    _check_training_args(n_items, offset, max_points, max_thinking, holdout, l2, delimiter)
    be = hidden_state_backend(model)
    name, items = _items(dataset, n_items, offset, data_dir, seed)
    per_item = _collect_all(be, items, max_thinking=max_thinking, max_points=max_points, delimiter=delimiter,
                            seed=seed, say=progress or (lambda msg: None))
    train, held = _split_by_item(per_item, holdout, seed)
    fit = _fit_and_score(train, held, l2)
    training = {
        "dataset": name, "offset": offset, "items": [it.id for it, _, _ in train],
        "heldout_items": [it.id for it, _, _ in held],
        "question_sha1": [question_hash(it.question) for it, _, _ in per_item],
        "n_points": fit["n_points"], "n_positive": fit["n_positive"], "single_class": fit["single"],
        "max_thinking": max_thinking, "max_points": max_points, "seed": seed, "holdout": holdout,
    }
    data = _probe_document(be, fit, training, l2=l2, delimiter=delimiter)
    out = Path(out_path).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1))
    return data


def _check_training_args(n_items, offset, max_points, max_thinking, holdout, l2, delimiter) -> None:
    if n_items < 1 or offset < 0 or max_points < 1 or max_thinking < 1:
        raise ConfigError("n_items, max_points and max_thinking must be >= 1 and offset >= 0")
    if not 0 <= holdout < 1:
        raise ConfigError(f"holdout must be in [0, 1), got {holdout}")
    if l2 <= 0:
        raise ConfigError(f"l2 must be > 0, got {l2}")
    if not delimiter:
        raise ConfigError("the step delimiter is empty")


def _collect_all(be, items, *, max_thinking: int, max_points: int, delimiter: str, seed: int,
                 say: Callable[[str], None]) -> list[tuple]:
    """(item, features, labels) for every item, reporting progress item by item."""
    per_item = []
    t0 = time.time()
    for i, it in enumerate(items):
        f, y, _ = collect_points(be, it, max_thinking=max_thinking, max_points=max_points, delimiter=delimiter, seed=seed)
        per_item.append((it, f, y))
        say(f"item {i + 1}/{len(items)} {it.id}: {len(y)} step ends, {sum(y)} right · {time.time() - t0:.0f}s")
    return per_item


def _split_by_item(per_item: list[tuple], holdout: float, seed: int) -> tuple[list[tuple], list[tuple]]:
    """(train, held out), split by item (never points of one chain on both sides); at least
    one item on each side when there is a holdout and more than one item."""
    order = np.random.default_rng(seed).permutation(len(per_item))
    n_held = min(len(per_item) - 1, round(holdout * len(per_item))) if holdout > 0 and len(per_item) > 1 else 0
    n_held = max(n_held, 1) if holdout > 0 and len(per_item) > 1 else 0
    held_idx = set(order[:n_held].tolist())
    return ([p for j, p in enumerate(per_item) if j not in held_idx], [p for j, p in enumerate(per_item) if j in held_idx])


def _fit_and_score(train: list[tuple], held: list[tuple], l2: float) -> dict[str, Any]:
    """Fit on the training points; AUC and accuracy on the training and held-out points."""
    Xtr = [x for _, f, _ in train for x in f]
    ytr = [v for _, _, y in train for v in y]
    if not Xtr:
        raise ConfigError("no training points: the chains had no step ends; give more items or a larger max_thinking")
    w, b, mean, std, single = fit_logreg(np.vstack(Xtr), np.asarray(ytr), l2)
    probe = LinearProbe(w, b, mean, std)

    def scores(X, y):
        if not len(y):
            return None, None
        p = np.array([probe.predict(x) for x in X])
        return auc(p, y), float(np.mean((p >= 0.5) == (np.asarray(y) == 1)))

    tr_auc, tr_acc = scores(Xtr, ytr)
    Xh = [x for _, f, _ in held for x in f]
    yh = [v for _, _, y in held for v in y]
    h_auc, h_acc = scores(Xh, yh)
    return {"w": w, "b": b, "mean": mean, "std": std, "single": single, "n_points": len(ytr),
            "n_positive": int(sum(ytr)),
            "metrics": {"train_auc": tr_auc, "train_accuracy": tr_acc, "heldout_auc": h_auc, "heldout_accuracy": h_acc,
                        "heldout_points": len(yh), "heldout_positive": int(sum(yh))}}


def _probe_document(be, fit: dict[str, Any], training: dict[str, Any], *, l2: float, delimiter: str) -> dict[str, Any]:
    """The probe file's contents (`leanthink-probe/1`, see the module docstring)."""
    from . import __version__ as version

    return {
        "format": FORMAT,
        "model_id": be.model_id,
        "backend": be.name,
        "layer": -1,
        "position": POSITION,
        "step_delimiter": delimiter,
        "hidden_size": int(fit["w"].shape[0]),
        "label": LABEL,
        "l2": l2,
        "bias": fit["b"],
        "weights": [float(x) for x in fit["w"]],
        "mean": [float(x) for x in fit["mean"]],
        "std": [float(x) for x in fit["std"]],
        "training": training,
        "metrics": fit["metrics"],
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "leanthink_version": version,
    }


# --------------------------------------------------------------------------- CLI

_STEPS = {"paragraph": "\n\n", "line": "\n"}


def probe_train_command(
    model: str = typer.Option("qwen2.5-coder-1.5b", "--model", help="Model string; presets and .gguf files are opened with transformers (hidden states)."),
    dataset: str = typer.Option("gsm8k", "--dataset", "-d", help="Dataset spec (see `leanthink datasets`)."),
    n_items: int = typer.Option(100, "--n-items", help="Training items (a share is held out for AUC/accuracy)."),
    offset: int = typer.Option(100, "--offset", help="Skip the first N items; `leanthink bench --limit N` evaluates on those."),
    out: str = typer.Option("probe.json", "--out", "-o", help="Where to write the probe (JSON)."),
    max_thinking: int = typer.Option(512, "--max-thinking", help="Thinking cap of each training chain."),
    max_points: int = typer.Option(8, "--max-points", help="Most step ends labelled per chain."),
    holdout: float = typer.Option(0.25, "--holdout", help="Share of items held out for evaluation."),
    l2: float = typer.Option(1.0, "--l2", help="L2 strength of the logistic regression."),
    step: str = typer.Option("paragraph", "--step", help="Step ends: paragraph (blank line) or line (newline)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the item split."),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="Directory with gsm8k_dev.jsonl etc."),
):
    """Train a linear probe for `probe-exit`: hidden state at step ends -> is the forced answer right?"""
    from rich.console import Console

    err = Console(stderr=True)
    if step not in _STEPS:
        err.print(f"[bold red]error:[/] --step must be one of {', '.join(_STEPS)}, got '{step}'")
        raise typer.Exit(2)
    try:
        d = train_probe(model, dataset, n_items, out, offset=offset, data_dir=data_dir, max_thinking=max_thinking,
                        max_points=max_points, holdout=holdout, l2=l2, seed=seed, delimiter=_STEPS[step],
                        progress=lambda msg: err.print(f"[dim]{msg}[/]", highlight=False))
    except LeanthinkError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2)
    m, t = d["metrics"], d["training"]

    def f(x):
        return "–" if x is None else f"{x:.3f}"

    typer.echo(f"probe written to {out}: {t['n_points']} training points ({t['n_positive']} right) from "
               f"{len(t['items'])} items; held-out {m['heldout_points']} points from {len(t['heldout_items'])} items: "
               f"AUC {f(m['heldout_auc'])}, accuracy {f(m['heldout_accuracy'])}"
               + (" (single class: constant probe)" if t["single_class"] else ""))


__all__ = ["LinearProbe", "load_probe", "question_hash", "train_probe", "fit_logreg", "auc", "probe_train_command", "FORMAT"]
