"""Offline, seeded problem generators from `reasoning_gym` (`rg:TASK?n=50`)."""

from __future__ import annotations

import json

from ..errors import ConfigError, DataError, require
from .records import clean_number, is_number
from .types import Item

#: Tasks known to work offline with short exact answers, and what they look like.
TASKS: dict[str, str] = {
    "gsm_symbolic": "GSM8K-style word problems with fresh numbers; integer answers",
    "syllogism": "does a conclusion follow from two premises? answers Yes/No",
    "family_relationships": "how is X related to Y in a described family? one-word answers (e.g. mother-in-law)",
    "basic_arithmetic": "evaluate an arithmetic expression; integer answers",
}
DEFAULT_N = 50


def _value(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def load_rg(task: str, params: dict[str, str], *, limit: int | None, seed: int, skip_bad: bool):
    """(items, skipped, source) for `rg:TASK`; extra params go to the task's config."""
    rg = require("reasoning_gym", "eval", f"the rg:{task} dataset needs reasoning-gym")
    from reasoning_gym.factory import DATASETS

    if task not in DATASETS:
        raise ConfigError(
            f"unknown reasoning-gym task {task!r}; tested tasks: {', '.join(TASKS)} "
            f"(any of the {len(DATASETS)} registered reasoning_gym tasks may be named)"
        )
    params = dict(params)
    if "n" in params:
        try:
            n = int(params.pop("n"))
        except ValueError:
            raise ConfigError(f"rg:{task}: n must be an integer") from None
        if n <= 0:
            raise ConfigError(f"rg:{task}: n must be positive, got {n}")
    else:
        n = limit if limit is not None else DEFAULT_N
    if "seed" in params:
        try:
            seed = int(params.pop("seed"))
        except ValueError:
            raise ConfigError(f"rg:{task}: seed must be an integer") from None
    config = {k: _value(v) for k, v in params.items()}
    try:
        ds = rg.create_dataset(task, size=n, seed=seed, **config)
    except (TypeError, ValueError, AssertionError) as exc:
        raise ConfigError(f"rg:{task}: bad task options {config or ''}: {exc}") from exc

    items: list[Item] = []
    skipped: list[tuple[int, str]] = []
    for i in range(n):
        entry = ds[i]
        question = str(entry.get("question") or "").strip()
        answer = entry.get("answer")
        answer = "" if answer is None else str(answer).strip()
        reason = "empty question" if not question else "no exact answer" if not answer else None
        if reason:
            if not skip_bad:
                raise DataError(
                    f"rg:{task}: item {i}: {reason}; this task has no short exact answers, "
                    f"use one of: {', '.join(TASKS)}"
                )
            skipped.append((i, reason))
            continue
        kind = "number" if is_number(answer) else "text"
        if kind == "number":
            answer = clean_number(answer)
        meta = {"task": task, "seed": seed, **(entry.get("metadata") or {})}
        items.append(Item(id=f"{task}/seed{seed}/{i}", question=question, answer=answer, kind=kind, meta=meta))
        if limit is not None and len(items) >= limit:
            break
    opts = "".join(f", {k}={v}" for k, v in config.items())
    source = f"reasoning_gym {task} (n={n}, seed={seed}{opts})"
    return items, skipped, source
