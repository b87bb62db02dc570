"""Votes and stopping rules of the sampling methods: pure functions of the samples so far.

Nothing here runs a model or a thread, so every decision a sampling method takes (the
vote, when to stop, how many samples to draw) can be tested on hand-made samples. Answers
are grouped by equivalence: `5`, `5.0` and `\\frac{10}{2}` are one vote. `collab.Route`
votes on its fast answers with the same `Votes`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Generic, Iterable, Protocol, TypeVar

import numpy as np

from ...grading import is_equivalent
from ...result import Result

# --------------------------------------------------------------------------- samples


@dataclass
class Sample:
    index: int
    seed: int
    result: Result | None = None
    status: str = "done"
    """`done`, `cancelled` (short-m@k) or `error`."""
    generated: int = 0
    """Tokens the engine generated for this sample, counted on its streams (recorded runs only)."""
    logprobs: list[float] = field(default_factory=list)
    """Logprobs of the tokens this sample drew at temperature > 0 (recorded runs only)."""
    score: float | None = None
    error: str | None = None

    @property
    def answer(self) -> str | None:
        a = self.result.answer if self.result is not None else None
        return a if a is not None and str(a).strip() else None

    @property
    def tokens(self) -> int:
        """Output-side tokens this sample cost: its usage total, or what a cancelled stream generated."""
        return self.result.usage.total if self.result is not None else self.generated

    @property
    def length(self) -> int:
        if self.result is None:
            return self.generated
        return self.result.usage.thinking + self.result.usage.answer

    @property
    def mean_logprob(self) -> float | None:
        return float(np.mean(self.logprobs)) if self.logprobs else None

    @property
    def path_prob(self) -> float:
        """exp(mean logprob) = 1 / perplexity of the sampled tokens (0 if unknown)."""
        lp = self.mean_logprob
        return math.exp(lp) if lp is not None else 0.0


# --------------------------------------------------------------------------- votes


class Voter(Protocol):
    """What `Votes` reads: the answer (None: no answer) and the position that breaks ties."""

    @property
    def index(self) -> int: ...

    @property
    def answer(self) -> str | None: ...


V = TypeVar("V", bound=Voter)


@lru_cache(maxsize=4096)
def same_answer(a: str, b: str) -> bool:
    """Equivalence-aware answer comparison (`5`, `5.0` and `\\frac{10}{2}` are one vote)."""
    if " ".join(a.split()) == " ".join(b.split()):
        return True
    return is_equivalent(a, b)


class Votes(Generic[V]):
    """Answers grouped by equivalence, in order of first appearance."""

    def __init__(self, voters: Iterable[V] = ()):
        self.groups: list[list[V]] = []
        self.unanswered: list[V] = []
        for s in voters:
            self.add(s)

    def add(self, s: V) -> None:
        a = s.answer
        if a is None:
            self.unanswered.append(s)
            return
        for g in self.groups:
            if same_answer(a, g[0].answer):
                g.append(s)
                return
        self.groups.append([s])

    @property
    def n(self) -> int:
        return sum(len(g) for g in self.groups) + len(self.unanswered)

    def ranked(self) -> list[list[V]]:
        """Groups by votes (desc); ties by the smallest index."""
        return sorted(self.groups, key=lambda g: (-len(g), min(s.index for s in g)))

    def top(self) -> list[V] | None:
        r = self.ranked()
        return r[0] if r else None

    def top_count(self) -> int:
        t = self.top()
        return len(t) if t else 0

    def counts(self) -> list[int]:
        """Votes per answer group, then the unanswered count (if any), in order of first appearance."""
        return [len(g) for g in self.groups] + ([len(self.unanswered)] if self.unanswered else [])

    def table(self) -> dict[str, int]:
        out = {g[0].answer: len(g) for g in self.ranked()}
        if self.unanswered:
            out["(none)"] = len(self.unanswered)
        return out


def majority(samples: list[Sample]) -> tuple[Sample, Votes[Sample]]:
    """Majority vote; ties go to the answer seen first; the representative is that
    answer's first sample. With no answer at all, the first finished sample."""
    votes = Votes(samples)
    top = votes.top()
    done = [s for s in samples if s.result is not None]
    chosen = min(top, key=lambda s: s.index) if top else done[0]
    return chosen, votes


def shortest_majority(voters: list[Sample]) -> tuple[Sample, Votes[Sample]]:
    """short-m@k's vote: the most frequent answer; among tied answers the one with the
    shortest chain; its shortest chain represents it. No answer at all: the shortest chain."""
    votes = Votes(voters)
    ranked = votes.ranked()
    if not ranked:
        return min(voters, key=lambda s: (s.length, s.index)), votes
    tied = [g for g in ranked if len(g) == len(ranked[0])]
    group = min(tied, key=lambda g: min(s.length for s in g))
    return min(group, key=lambda s: (s.length, s.index)), votes


def probability_vote(samples: list[Sample]) -> tuple[Sample | None, dict[str, float]]:
    """rpc's vote: each answer scores the summed `score` (path probability) of its samples;
    the best answer's best-scored sample wins (ties: the earlier one). (None, {}) without
    any answer."""
    votes = Votes(samples)
    if not votes.groups:
        return None, {}
    best = max(votes.groups, key=lambda g: (sum(s.score for s in g), -min(s.index for s in g)))
    chosen = max(best, key=lambda s: (s.score, -s.index))
    return chosen, {g[0].answer: round(sum(s.score for s in g), 4) for g in votes.groups}


def frequent_groups(votes: Votes[Sample], min_share: float) -> list[list[Sample]]:
    """bom's filter: the answer groups with at least `min_share` x the top answer's votes."""
    top = votes.top_count()
    return [g for g in votes.ranked() if len(g) >= min_share * top] if top else []


def low_cluster(values: list[float]) -> list[int]:
    """Indices of the low group of a 1-D two-means split (minimum within-group squared
    error), a light stand-in for the paper's two-component Weibull mixture."""
    if len(values) < 3 or max(values) - min(values) < 1e-9:
        return []
    order = sorted(range(len(values)), key=lambda i: values[i])
    xs = np.array([values[i] for i in order])
    best, cut = float("inf"), 0
    for c in range(1, len(xs)):
        sse = ((xs[:c] - xs[:c].mean()) ** 2).sum() + ((xs[c:] - xs[c:].mean()) ** 2).sum()
        if sse < best:
            best, cut = sse, c
    return order[:cut]


# --------------------------------------------------------------------------- stopping rules


def beta_settled(top: int, rest: int) -> float:
    """P(p_top > 1/2) for p_top ~ Beta(top + 1, rest + 1): the top answer vs all the others.

    For integer parameters, P(X > 1/2) = P(Bin(top + rest + 1, 1/2) <= top)."""
    n = top + rest + 1
    return sum(math.comb(n, i) for i in range(top + 1)) / 2 ** n


def dirichlet_settled(counts: list[int], *, draws: int = 20000, seed: int = 0) -> float:
    """P(the top answer has the largest probability) under Dirichlet(counts + 1), with one
    extra category for answers not seen yet (Monte Carlo, seeded)."""
    if not counts:
        return 0.0
    c = np.array(sorted(counts, reverse=True) + [0], dtype=float)
    rng = np.random.default_rng(seed)
    x = rng.dirichlet(c + 1.0, size=draws)
    return float(np.mean(np.argmax(x, axis=1) == 0))


def settled(votes: Votes[Sample], criterion: str, seed: int) -> float:
    """adaptive-sc's P(the majority answer is settled): `beta` (top answer vs all the rest,
    unanswered included) or `dirichlet` (top answer vs each other answer and an unseen one;
    unanswered samples count as one more answer)."""
    top = votes.top_count()
    if top == 0:
        return 0.0
    if criterion == "beta":
        return beta_settled(top, votes.n - top)
    counts = votes.counts()
    if max(counts) != top:  # more unanswered than the top answer: not settled
        return 0.0
    return dirichlet_settled(counts, seed=seed)


def unanimous(window: list[Sample], size: int) -> bool:
    """esc's stop: a full window of `size` samples whose answers all agree (none missing)."""
    v = Votes(window)
    return len(window) == size and not v.unanswered and len(v.groups) == 1


def disagreement(pre: list[Sample]) -> float:
    """dsc's difficulty from a pre-sample: 0 when all agree, 1 when all differ (or none answered)."""
    top = Votes(pre).top_count()
    return 1.0 if top == 0 else (len(pre) - top) / (len(pre) - 1)


def allocate_by_disagreement(d: float, pre: int, k: int) -> int:
    """Samples in all for disagreement `d`: the pre-sample alone when it agrees, else up to k."""
    return pre if d == 0 else min(k, pre + math.ceil((k - pre) * d))


def allocate_by_rating(rating: float, k: int) -> int:
    """Samples in all for a 1-9 difficulty rating: 1 for a 1, k for a 9, linear between."""
    return max(1, min(k, round(1 + (k - 1) * (rating - 1) / 8)))


def expected_digit(top_logprobs: dict[str, float], digits: str) -> float | None:
    """Expected value of a one-digit reply from its top logprobs (probability mass of each
    digit in `digits`, summed over tokens that strip to it, renormalised); None: no digit."""
    probs: dict[int, float] = {}
    for tok, lp in top_logprobs.items():
        t = tok.strip()
        if len(t) == 1 and t in digits:
            probs[int(t)] = probs.get(int(t), 0.0) + math.exp(lp)
    if not probs:
        return None
    z = sum(probs.values())
    return sum(d * q for d, q in probs.items()) / z
