"""Fixed-k methods: draw k samples, then pick one answer.

  sc   majority vote (answers grouped by equivalence)
  bon  best-of-N by a scorer: `logprob` (mean token logprob of what the sample drew, i.e.
       -log perplexity), `short` (fewest tokens), or one given to `register_scorer`
"""

from __future__ import annotations

from pydantic import Field

from ...result import Result
from ..base import Task, register
from .base import SampleParams, SamplingMethod, stop_event
from .scorers import ScoredMethod, ScorerName
from .votes import majority


class SCParams(SampleParams):
    k: int = Field(8, ge=1, le=64, description="Number of samples.")


@register
class SelfConsistency(SamplingMethod):
    name = "sc"
    summary = "Self-consistency: k sampled chains, majority vote over their answers (equivalent answers count together)."
    reference = "Wang et al. 2023, Self-Consistency Improves Chain of Thought Reasoning in Language Models"
    Params = SCParams

    def run(self, task: Task) -> Result:
        samples = self.batch(task, range(self.params.k))
        chosen, votes = majority(samples)
        ev = stop_event(len(samples), f"fixed k={self.params.k}", votes=votes.table())
        return self.combine(task, samples, chosen, [ev])


class BoNParams(SampleParams):
    k: int = Field(8, ge=1, le=64, description="Number of samples.")
    scorer: ScorerName = Field("logprob", description="logprob (mean token logprob = -log perplexity), short (fewest tokens), or a name given to register_scorer.")


@register
class BestOfN(ScoredMethod, SamplingMethod):
    name = "bon"
    summary = "Best-of-N: k sampled chains, keep the one a scorer likes best (default: highest mean token logprob; pluggable reward model)."
    reference = "Cobbe et al. 2021, Training Verifiers to Solve Math Word Problems (best-of-N with a scorer)"
    Params = BoNParams

    def run(self, task: Task) -> Result:
        samples = self.batch(task, range(self.params.k))
        spent = self.score(task, samples, self.params.scorer)
        done = [s for s in samples if s.score is not None]
        chosen = max(done, key=lambda s: (s.score, -s.index))
        ev = stop_event(len(samples), f"best of {len(samples)} by {self.params.scorer}", score=round(chosen.score, 4))
        return self.combine(task, samples, chosen, [ev], extra_overhead=spent)
