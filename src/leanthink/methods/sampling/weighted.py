"""Weighted votes: samples count by how probable or how well scored they are.

  rpc  Perplexity Consistency: each answer scores the summed probability (exp mean
       logprob) of its chains, after low-probability chains are pruned
  bom  Best-of-Majority: keep answers with votes >= min_share x the top count, then take
       the best-scored sample among them
"""

from __future__ import annotations

import math

from pydantic import Field

from ...result import Result
from ..base import Task, register
from .base import SampleParams, SamplingMethod, stop_event
from .scorers import ScoredMethod, ScorerName
from .votes import Votes, frequent_groups, low_cluster, probability_vote


class RPCParams(SampleParams):
    k: int = Field(8, ge=1, le=64, description="Number of samples.")
    prune: bool = Field(True, description="Reasoning pruning: drop the low-probability cluster of chains before voting.")
    min_keep: float = Field(0.5, gt=0, le=1, description="Never prune more than 1 - min_keep of the chains.")


@register
class RPC(SamplingMethod):
    name = "rpc"
    summary = "Reasoning-Pruning Perplexity Consistency: prune low-probability chains, then each answer scores the summed probability of its chains."
    reference = "Zhou et al. 2025, Bridging Internal Probability and Self-Consistency for Effective and Efficient LLM Reasoning"
    Params = RPCParams
    record_logprobs = True

    def run(self, task: Task) -> Result:
        p = self.params
        samples = self.batch(task, range(p.k))
        done = [s for s in samples if s.result is not None]
        for s in done:
            s.score = s.path_prob
        pruned: list[int] = []
        if p.prune:
            low = low_cluster([s.score for s in done])
            if len(low) <= len(done) - math.ceil(p.min_keep * len(done)):
                pruned = [done[i].index for i in low]
        kept = [s for s in done if s.index not in pruned]
        chosen, scores = probability_vote(kept)
        if chosen is None:
            chosen = kept[0] if kept else done[0]
        ev = stop_event(len(samples), f"perplexity consistency over {len(kept)} of {len(samples)} chains",
                        pruned=pruned, answer_scores=scores)
        return self.combine(task, samples, chosen, [ev])


class BoMParams(SampleParams):
    k: int = Field(8, ge=1, le=64, description="Number of samples.")
    min_share: float = Field(0.5, gt=0, le=1, description="Keep answers whose votes are >= this fraction of the top answer's votes.")
    scorer: ScorerName = Field("logprob", description="Scorer among the kept samples (see bon).")


@register
class BestOfMajority(ScoredMethod, SamplingMethod):
    name = "bom"
    summary = "Best-of-Majority: keep only frequent answers (votes >= min_share x top), then pick the best-scored sample among them."
    reference = "Di et al. 2025, Best-of-Majority: Minimax-Optimal Strategy for Pass@k Inference Scaling"
    Params = BoMParams

    def run(self, task: Task) -> Result:
        p = self.params
        samples = self.batch(task, range(p.k))
        spent = self.score(task, samples, p.scorer)
        votes = Votes(samples)
        kept_groups = frequent_groups(votes, p.min_share)
        pool = [s for g in kept_groups for s in g] or [s for s in samples if s.result is not None]
        chosen = max(pool, key=lambda s: (s.score if s.score is not None else float("-inf"), -s.index))
        ev = stop_event(len(samples), f"best of {len(pool)} samples in {len(kept_groups)} frequent answer(s)",
                        kept=[g[0].answer for g in kept_groups], votes=votes.table())
        return self.combine(task, samples, chosen, [ev], extra_overhead=spent)
