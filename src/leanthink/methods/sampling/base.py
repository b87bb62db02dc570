"""What every sampling method shares: its inner method, running samples, the combined Result.

Every sample is one chain at temperature > 0 (default 0.7, seed = task.seed + i) run by a
single-chain method, `inner` (default `think`; e.g. `sc(k=4,inner=deer)`). The sample's
Task is a copy of the question's Task with that temperature and seed, so the inner method
works as it does alone (its own probes, caps and accounting).

Token accounting, the same for every method: the chosen sample's usage is the result's
thinking/answer/forced/overhead; every other sample's tokens (whole usage, or for a
cancelled `short-m@k` stream the tokens it actually generated) are added to `overhead`.
`Result.samples` is the number of chains actually started. The trace holds the per-sample
answers (`samples` event) and the stopping decision (`stop` event).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, ClassVar, Iterable

from pydantic import BaseModel, Field, field_validator

from ...backends.base import BaseBackend
from ...errors import ConfigError
from ...result import Result, TraceEvent, Usage
from ..base import Method, Task, get_method
from .scheduler import Cancelled, SampleBackend, Turns
from .scorers import score_samples
from .votes import Sample


def build_inner(spec: str, max_thinking: int | None = None) -> Method:
    """A single-chain method from its spec; its token budget is set to `max_thinking`
    unless the spec sets it. Raises ValueError (pydantic turns it into a ConfigError)."""
    try:
        m = get_method(spec)
    except ConfigError as exc:
        raise ValueError(f"inner method: {exc}") from None
    target = m.budget_target()
    if not m.one_chain:
        raise ValueError(f"inner method must run one chain; '{target.name}' is a {target.kind} method")
    if max_thinking is not None and target.budget_param:
        m = m.with_budget(max_thinking, keep_explicit=True)
    return m


class SampleParams(BaseModel):
    temperature: float = Field(0.7, gt=0, le=2, description="Sampling temperature of every chain.")
    max_thinking: int = Field(1024, gt=0, description="Thinking cap per sample (the inner method's budget, unless its spec sets one).")
    inner: str = Field("think", min_length=1, description="Single-chain method each sample runs: think, deer, budget(max_thinking=256), chain-of-draft+deer, ...")

    @field_validator("inner")
    @classmethod
    def _inner_ok(cls, v: str) -> str:
        build_inner(v)
        return v


def stop_event(n: int, why: str, **detail: Any) -> TraceEvent:
    """The trace event that says why a sampling method stopped after n samples."""
    return TraceEvent(event="stop", detail={"samples": n, "why": why, **detail})


class SamplingMethod(Method):
    kind = "sampling"
    budget_param: ClassVar[str | None] = "max_thinking"
    record_logprobs: ClassVar[bool] = False

    def __init__(self, **params: Any):
        super().__init__(**params)
        self.inner = build_inner(self.params.inner, self.params.max_thinking)

    def wants_logprobs(self) -> bool:
        return self.record_logprobs

    def check(self, backend: BaseBackend) -> None:
        needed = set(self.needs) | ({"logprobs"} if self.wants_logprobs() else set())
        backend.require(needed, f"method '{self.name}'")
        self.inner.check(backend)

    # -- running samples ----------------------------------------------------------
    def sample(self, task: Task, i: int, *, engine: ThreadPoolExecutor | None = None,
               turns: Turns | None = None) -> Sample:
        """Run sample i (seed = task.seed + i) with the inner method."""
        seed = task.seed + i
        s = Sample(i, seed)
        backend = task.backend
        proxy = None
        if self.wants_logprobs() or engine is not None or turns is not None:
            proxy = SampleBackend(backend, sid=i, logprobs=self.wants_logprobs(), engine=engine, turns=turns)
            backend = proxy
        st = replace(task, backend=backend, temperature=self.params.temperature, seed=seed,
                     pre_usage=Usage(), pre_trace=[])
        try:
            s.result = self.inner(st)
        except Cancelled:
            s.status = "cancelled"
        finally:
            if proxy is not None:
                proxy.close_streams()
                s.generated, s.logprobs = proxy.generated, list(proxy.logprobs)
        if s.result is not None and proxy is None:
            s.generated = s.result.usage.thinking + s.result.usage.answer
        return s

    def batch(self, task: Task, indices: Iterable[int]) -> list[Sample]:
        """Several samples: threads on servers that run requests in parallel, else in turn."""
        idx = list(indices)
        if len(idx) > 1 and task.backend.capabilities.parallel_samples:
            with ThreadPoolExecutor(len(idx)) as ex:
                return list(ex.map(lambda i: self.sample(task, i), idx))
        return [self.sample(task, i) for i in idx]

    def score(self, task: Task, samples: list[Sample], scorer: str) -> int:
        """Fill `sample.score`; returns tokens the scorer spent (overhead)."""
        return score_samples(task, samples, scorer)

    # -- the result -----------------------------------------------------------------
    def combine(self, task: Task, samples: list[Sample], chosen: Sample, events: list[TraceEvent],
                *, extra_overhead: int = 0) -> Result:
        """The chosen sample's Result, with every other sample's tokens (and `extra_overhead`)
        as overhead, and the per-sample trace."""
        rep = chosen.result
        assert rep is not None
        others = sum(s.tokens for s in samples if s is not chosen)
        u = rep.usage
        usage = Usage(prompt=u.prompt, thinking=u.thinking, answer=u.answer, forced=u.forced,
                      overhead=u.overhead + others + extra_overhead).add(task.pre_usage)
        per_sample = TraceEvent(event="samples", detail={
            "answers": [s.answer if s.status == "done" else s.status for s in samples],
            "tokens": [s.tokens for s in samples],
            "chosen": chosen.index,
            **({"scores": [None if s.score is None else round(s.score, 4) for s in samples]}
               if any(s.score is not None for s in samples) else {}),
        })
        return rep.model_copy(update=dict(
            question=task.question, method=self.spec, params=self.param_dict(), usage=usage,
            samples=len(samples), trace=list(task.pre_trace) + list(rep.trace) + [per_sample] + events,
        ))
