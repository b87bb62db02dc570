"""Adaptive methods: how many samples to draw depends on what the first ones say.

  adaptive-sc  sample in small batches; stop when a Beta (top answer vs the rest) or
               Dirichlet criterion says P(the majority is settled) >= threshold
  esc          windows of w samples; stop at the first unanimous window
  dsc          estimate difficulty first (agreement of a 2-sample pre-sample, or the
               model's own 1-9 rating); allocate the number of samples by difficulty

The rules themselves (`settled`, `unanimous`, `disagreement`, `allocate_by_*`) are pure
functions in `votes.py`; the methods here only draw samples and record the decisions.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, model_validator

from ...backends.base import BaseBackend, SamplingParams
from ...result import Result, TraceEvent
from ..base import Task, register
from .base import SampleParams, SamplingMethod, stop_event
from .votes import (
    Sample, Votes, allocate_by_disagreement, allocate_by_rating, disagreement, expected_digit, majority, settled,
    unanimous,
)


class AdaptiveParams(SampleParams):
    k: int = Field(8, ge=1, le=64, description="Most samples.")
    threshold: float = Field(0.95, gt=0.5, lt=1, description="Stop when P(majority is settled) reaches this.")
    criterion: Literal["beta", "dirichlet"] = Field("beta", description="beta: top answer vs all the rest; dirichlet: top answer vs each other answer (+ unseen).")
    batch: int = Field(1, ge=1, le=16, description="Samples drawn between two checks.")
    min_samples: int = Field(1, ge=1, description="Never stop before this many samples.")

    @model_validator(mode="after")
    def _order(self):
        if self.min_samples > self.k:
            raise ValueError("min_samples must be <= k")
        return self


@register
class AdaptiveSC(SamplingMethod):
    name = "adaptive-sc"
    summary = "Adaptive-Consistency: sample a few chains at a time; stop when a Beta/Dirichlet criterion says the majority answer is settled."
    reference = "Aggarwal et al. 2023, Let's Sample Step by Step: Adaptive-Consistency for Efficient Reasoning and Coding with LLMs"
    Params = AdaptiveParams

    def settled(self, votes: Votes[Sample], seed: int) -> float:
        return settled(votes, self.params.criterion, seed)

    def run(self, task: Task) -> Result:
        p = self.params
        samples: list[Sample] = []
        votes: Votes[Sample] = Votes()
        history: list[float] = []
        prob = 0.0
        while len(samples) < p.k:
            new = self.batch(task, range(len(samples), min(p.k, len(samples) + p.batch)))
            for s in new:
                votes.add(s)
            samples += new
            prob = self.settled(votes, task.seed)
            history.append(round(prob, 4))
            if len(samples) >= p.min_samples and prob >= p.threshold:
                break
        chosen, _ = majority(samples)
        stopped = prob >= p.threshold and len(samples) >= p.min_samples
        why = (f"stopped after {len(samples)} samples, P(settled)={prob:.3f} >= {p.threshold}" if stopped
               else f"reached k={p.k}, P(settled)={prob:.3f} < {p.threshold}")
        ev = stop_event(len(samples), why, p_settled=round(prob, 4), history=history, early=stopped and len(samples) < p.k,
                        votes=votes.table())
        return self.combine(task, samples, chosen, [ev])


class ESCParams(SampleParams):
    k: int = Field(8, ge=1, le=64, description="Most samples.")
    window: int = Field(4, ge=2, le=32, description="Window size w: stop when the w answers of a window agree.")

    @model_validator(mode="after")
    def _order(self):
        if self.window > self.k:
            raise ValueError("window must be <= k")
        return self


@register
class EarlyStoppingSC(SamplingMethod):
    name = "esc"
    summary = "Early-Stopping Self-Consistency: sample in windows of w; stop at the first window whose answers are unanimous."
    reference = "Li et al. 2024, Escape Sky-high Cost: Early-stopping Self-Consistency for Multi-step Reasoning"
    Params = ESCParams

    def run(self, task: Task) -> Result:
        p = self.params
        samples: list[Sample] = []
        agreed = False
        while len(samples) < p.k and not agreed:
            window = self.batch(task, range(len(samples), min(p.k, len(samples) + p.window)))
            samples += window
            agreed = unanimous(window, p.window)
        chosen, votes = majority(samples)
        windows = math.ceil(len(samples) / p.window)
        why = (f"window {windows} unanimous: stopped after {len(samples)} samples" if agreed
               else f"no unanimous window in {windows}: reached k={p.k}")
        ev = stop_event(len(samples), why, windows=windows, early=agreed and len(samples) < p.k, votes=votes.table())
        return self.combine(task, samples, chosen, [ev])


class DSCParams(SampleParams):
    k: int = Field(8, ge=2, le=64, description="Samples for the hardest items.")
    difficulty: Literal["agreement", "rating"] = Field("agreement", description="agreement: of a small pre-sample; rating: the model rates the question 1-9 (one token).")
    pre: int = Field(2, ge=2, le=16, description="Pre-sample size (agreement); kept in the vote.")

    @model_validator(mode="after")
    def _order(self):
        if self.pre > self.k:
            raise ValueError("pre must be <= k")
        return self


_RATE = ("How difficult is the following problem for you to solve correctly? Rate it from 1 (trivial) to 9 "
         "(very hard). Reply with a single digit.\n\nProblem: {q}")


@register
class DifficultySC(SamplingMethod):
    name = "dsc"
    summary = "Difficulty-Adaptive Self-Consistency: estimate difficulty cheaply (pre-sample agreement or self-rating), then allocate samples by it."
    reference = "Wang et al. 2024, Make Every Penny Count: Difficulty-Adaptive Self-Consistency for Cost-Efficient Reasoning"
    Params = DSCParams

    def check(self, backend: BaseBackend) -> None:
        super().check(backend)
        if self.params.difficulty == "rating":
            backend.require({"top_logprobs"}, "dsc(difficulty=rating)")

    def rate(self, task: Task) -> tuple[float, int]:
        """Expected 1-9 difficulty from the first token's top logprobs; (rating, tokens spent)."""
        fam = task.family
        prompt = task.backend.render_chat([{"role": "user", "content": _RATE.format(q=task.question)}],
                                          **dict(fam.template_kwargs_nothink))
        prompt += fam.empty_thinking()
        chunks = list(task.backend.stream(prompt, SamplingParams(max_tokens=1, temperature=0.0, logprobs=20)))
        spent = sum(c.n_tokens for c in chunks)
        rating = expected_digit((chunks[0].top_logprobs or {}) if chunks else {}, "123456789")
        return (9.0 if rating is None else rating), spent  # no digit: assume hard

    def allocate(self, task: Task) -> tuple[list[Sample], int, int, dict]:
        """(pre-samples drawn, samples in all, tokens spent on the estimate, trace detail)."""
        p = self.params
        if p.difficulty == "rating":
            rating, spent = self.rate(task)
            return [], allocate_by_rating(rating, p.k), spent, {"rating": round(rating, 2)}
        pre = self.batch(task, range(p.pre))
        d = disagreement(pre)
        return pre, allocate_by_disagreement(d, p.pre, p.k), 0, {
            "pre_answers": [s.answer for s in pre], "disagreement": round(d, 3)}

    def run(self, task: Task) -> Result:
        p = self.params
        samples, total, spent, detail = self.allocate(task)
        samples += self.batch(task, range(len(samples), total))
        chosen, votes = majority(samples)
        diff = TraceEvent(event="difficulty", detail={"method": p.difficulty, **detail, "allocated": total})
        ev = stop_event(len(samples), f"difficulty ({p.difficulty}) allocated {total} of k={p.k} samples",
                        early=total < p.k, votes=votes.table())
        return self.combine(task, samples, chosen, [diff, ev], extra_overhead=spent)
