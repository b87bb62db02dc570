"""short-m@k: k chains "in parallel"; as soon as m finish, the others are cancelled (their
streams closed, so the engine stops) and the m vote. How the chains share one engine is
`scheduler.race`."""

from __future__ import annotations

from pydantic import Field, model_validator

from ...errors import ConfigError
from ...result import Result, TraceEvent
from ..base import Task, register
from .base import SampleParams, SamplingMethod, stop_event
from .scheduler import race
from .votes import shortest_majority


class ShortParams(SampleParams):
    k: int = Field(5, ge=1, le=32, description="Chains started in parallel.")
    m: int = Field(3, ge=1, le=32, description="Stop when this many have finished; they vote (ties: the shortest chain).")
    quantum: int = Field(64, ge=1, le=4096, description="In-process engines: tokens a chain generates before the next chain's turn (each switch re-evaluates the resumed chain's tokens on llama.cpp; smaller = finer finish order, slower).")

    @model_validator(mode="after")
    def _order(self):
        if self.m > self.k:
            raise ValueError("m must be <= k")
        return self


@register
class ShortMK(SamplingMethod):
    name = "short-m@k"
    summary = "short-m@k: start k chains in parallel, stop when the first m finish and cancel the rest (streams closed); the m vote."
    reference = "Hassid et al. 2025, Don't Overthink It: Preferring Shorter Thinking Chains for Improved LLM Reasoning"
    Params = ShortParams
    needs = frozenset({"cancellation"})

    def run(self, task: Task) -> Result:
        p = self.params
        free = task.backend.capabilities.parallel_samples
        all_samples, finished = race(
            p.k, p.m, quantum=p.quantum, free=free, seed=task.seed,
            run_sample=lambda i, engine, turns: self.sample(task, i, engine=engine, turns=turns))
        by_index = {s.index: s for s in all_samples}
        voters = [by_index[i] for i in finished[: p.m]]
        cancelled = [s for s in all_samples if s.status == "cancelled"]
        if not voters:
            raise ConfigError("short-m@k: no chain finished")  # pragma: no cover - errors are raised above
        chosen, votes = shortest_majority(voters)
        cancelled_tokens = sum(s.generated for s in cancelled)
        ev = TraceEvent(event="short_m_at_k", detail={
            "finished_order": finished, "voters": [s.index for s in voters], "cancelled": [s.index for s in cancelled],
            "cancelled_tokens": cancelled_tokens, "quantum": None if free else p.quantum,
            "mode": "threads" if free else "round-robin"})
        why = (f"{len(voters)} of k={p.k} finished first; cancelled {len(cancelled)} chain(s) after "
               f"{cancelled_tokens} generated tokens")
        stop = stop_event(len(all_samples), why, votes=votes.table(), early=bool(cancelled))
        return self.combine(task, all_samples, chosen, [ev, stop])
