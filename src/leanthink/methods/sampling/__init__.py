"""Sampling methods: several reasoning chains per question, combined into one answer.

Every sample is one chain at temperature > 0 run by a single-chain method, `inner`
(default `think`; e.g. `sc(k=4,inner=deer)`); the combined Result counts every sample's
tokens (see `base.py`).

  sc           fixed k, majority vote                                     fixed.py
  bon          best-of-N by a scorer (logprob, short, or your own)        fixed.py, scorers.py
  adaptive-sc  stop when P(the majority is settled) >= threshold          adaptive.py
  esc          stop at the first unanimous window of w samples            adaptive.py
  dsc          estimate difficulty first, allocate samples by it          adaptive.py
  rpc          perplexity-weighted vote after pruning unlikely chains     weighted.py
  bom          best-scored sample among the frequent answers              weighted.py
  short-m@k    k chains at once; the first m to finish vote               short_m.py, scheduler.py

The package:
  votes.py      Sample, Votes and every vote/stopping rule, as pure functions
  scorers.py    the scorer registry (`register_scorer`) for bon and bom
  scheduler.py  one sample's view of the backend; short-m@k's race of k chains on one engine
  base.py       the inner method, `SamplingMethod` (running samples, the combined Result)

Plug in a reward model with `register_scorer` (see `scorers.py`).
"""

from __future__ import annotations

from . import fixed, adaptive, weighted, short_m  # noqa: F401, I001  (registers the methods, in this order)
from .adaptive import AdaptiveParams, AdaptiveSC, DifficultySC, DSCParams, EarlyStoppingSC, ESCParams
from .base import SampleParams, SamplingMethod, build_inner, stop_event
from .fixed import BestOfN, BoNParams, SCParams, SelfConsistency
from .scorers import SCORERS, Scorer, check_scorer, register_scorer, score_samples
from .short_m import ShortMK, ShortParams
from .votes import (
    Sample, Voter, Votes, allocate_by_disagreement, allocate_by_rating, beta_settled, dirichlet_settled, disagreement,
    expected_digit, frequent_groups, low_cluster, majority, probability_vote, same_answer, settled, shortest_majority,
    unanimous,
)
from .weighted import RPC, BestOfMajority, BoMParams, RPCParams

__all__ = [
    "AdaptiveParams", "AdaptiveSC", "BestOfMajority", "BestOfN", "BoMParams", "BoNParams", "DSCParams", "DifficultySC",
    "ESCParams", "EarlyStoppingSC", "RPC", "RPCParams", "SCORERS", "SCParams", "Sample", "SampleParams",
    "SamplingMethod", "Scorer", "SelfConsistency", "ShortMK", "ShortParams", "Voter", "Votes",
    "allocate_by_disagreement", "allocate_by_rating", "beta_settled", "build_inner", "check_scorer",
    "dirichlet_settled", "disagreement", "expected_digit", "frequent_groups", "low_cluster", "majority",
    "probability_vote", "register_scorer", "same_answer", "score_samples", "settled", "shortest_majority",
    "stop_event", "unanimous",
]
