"""Scorers: how `bon` and `bom` rank samples. Two built in, more by `register_scorer`.

Plugging in an external reward model as a scorer::

    from leanthink.methods.sampling import register_scorer

    def rm(task, sample):                       # sample.result is the sample's Result
        text = sample.result.reasoning + "\\n" + sample.result.answer_text
        return my_reward_model.score(task.question, text)   # higher is better
        # or: return score, tokens_spent   (tokens are added to overhead)

    register_scorer("my-rm", rm)                # then: bon(k=8,scorer=my-rm)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Callable

from pydantic import AfterValidator

from ...errors import ConfigError
from ..base import Task
from .votes import Sample

Scorer = Callable[[Task, Sample], "float | tuple[float, int]"]


@dataclass(frozen=True)
class _ScorerEntry:
    fn: Scorer
    logprobs: bool
    """The scorer reads `sample.logprobs`: the backend must return logprobs."""


SCORERS: dict[str, _ScorerEntry] = {}


def register_scorer(name: str, fn: Scorer, *, logprobs: bool = False) -> None:
    """Make `scorer=name` available to `bon` and `bom`. `fn(task, sample)` returns a float
    (higher is better) or `(score, tokens_spent)`; tokens are counted as overhead. Set
    `logprobs=True` if it reads `sample.logprobs` (the sampled tokens' logprobs)."""
    if not name or not callable(fn):
        raise ConfigError("register_scorer needs a name and a callable")
    SCORERS[name] = _ScorerEntry(fn, logprobs)


def _score_logprob(task: Task, s: Sample) -> float:
    lp = s.mean_logprob
    return lp if lp is not None else float("-inf")


def _score_short(task: Task, s: Sample) -> float:
    return -float(s.length)


register_scorer("logprob", _score_logprob, logprobs=True)
register_scorer("short", _score_short)


def check_scorer(v: str) -> str:
    """The scorer must be registered (a ValueError becomes the parameter's ConfigError)."""
    if v not in SCORERS:
        raise ValueError(f"unknown scorer '{v}'; known: {', '.join(sorted(SCORERS))} (add one with register_scorer)")
    return v


ScorerName = Annotated[str, AfterValidator(check_scorer)]
"""The type of a `scorer` parameter: a registered scorer's name."""


class ScoredMethod:
    """Mixin of methods with a `scorer` parameter: logprobs are recorded when the scorer reads them."""

    params: Any

    def wants_logprobs(self) -> bool:
        return SCORERS[self.params.scorer].logprobs


def score_samples(task: Task, samples: list[Sample], scorer: str) -> int:
    """Fill `sample.score` of every finished sample; returns the tokens the scorer spent (overhead)."""
    entry = SCORERS[scorer]
    spent = 0
    for s in samples:
        if s.result is None:
            continue
        v = entry.fn(task, s)
        if isinstance(v, tuple):
            v, n = v
            spent += int(n)
        s.score = float(v)
    return spent
