"""Sampling methods: several reasoning chains per question, combined into one answer.

Every sample is one chain at temperature > 0 (default 0.7, seed = task.seed + i) run by
a single-chain method, `inner` (default `think`; e.g. `sc(k=4,inner=deer)`). The
sample's Task is a copy of the question's Task with that temperature and seed, so the
inner method works as it does alone (its own probes, caps and accounting).

Token accounting, the same for every method here: the chosen sample's usage is the
result's thinking/answer/forced/overhead; every other sample's tokens (whole usage, or
for a cancelled `short-m@k` stream the tokens it actually generated) are added to
`overhead`. `Result.samples` is the number of chains actually started. The trace holds
the per-sample answers and the stopping decision.

Methods:
  sc           fixed k, majority vote (answers grouped by `is_equivalent`)
  bon          best-of-N by a scorer: `logprob` (mean token logprob of what the sample
               drew, i.e. -log perplexity), `short` (fewest tokens), or your own (below)
  adaptive-sc  sample in small batches; stop when a Beta (top answer vs the rest) or
               Dirichlet criterion says P(the majority is settled) >= threshold
  esc          windows of w samples; stop at the first unanimous window
  dsc          estimate difficulty first (agreement of a 2-sample pre-sample, or the
               model's own 1-9 rating); allocate the number of samples by difficulty
  rpc          Perplexity Consistency: each answer scores the summed probability
               (exp mean logprob) of its chains, after low-probability chains are pruned
  bom          Best-of-Majority: keep answers with votes >= min_share x the top count,
               then take the best-scored sample among them
  short-m@k    k chains "in parallel"; as soon as m finish, the others are cancelled
               (their streams closed, so the engine stops) and the m vote

Plugging in an external reward model as a scorer (bon, bom)::

    from leanthink.methods.sampling import register_scorer

    def rm(task, sample):                       # sample.result is the sample's Result
        text = sample.result.reasoning + "\\n" + sample.result.answer_text
        return my_reward_model.score(task.question, text)   # higher is better
        # or: return score, tokens_spent   (tokens are added to overhead)

    register_scorer("my-rm", rm)                # then: bon(k=8,scorer=my-rm)

In-process engines (llama.cpp, transformers) have one model and, for llama.cpp, one KV
cache; `short-m@k` then runs its k chains on one engine thread, round-robin `quantum`
tokens at a time (llama.cpp restarts a stream whose cache was taken by another stream,
re-evaluating only the divergent suffix). HTTP backends (`parallel_samples`) get one
thread per chain. Either way a cancelled chain's stream is closed, which stops generation.
The interleaving has a price on llama.cpp: a resumed chain re-evaluates its own tokens
(prompt-speed, not counted as generated tokens), so a small quantum costs wall time
(k=4, 160-token chains on 2 CPU cores: quantum 16 took 2.2x the wall time of sc(k=4),
quantum 64 about the same). Restarted streams also re-seed the sampler, so short-m@k's
chains are not token-identical to sc's chains with the same seeds.
"""

from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, Callable, ClassVar, Iterable, Literal

import numpy as np
from pydantic import BaseModel, Field, field_validator, model_validator

from ..backends.base import BaseBackend, Chunk, SamplingParams
from ..errors import ConfigError
from ..grading import is_equivalent
from ..result import Result, TraceEvent, Usage
from .base import Method, Task, get_method, register

# --------------------------------------------------------------------------- inner method


def build_inner(spec: str, max_thinking: int | None = None) -> Method:
    """A single-chain method from its spec; its token budget is set to `max_thinking`
    unless the spec sets it. Raises ValueError (pydantic turns it into a ConfigError)."""
    try:
        m = get_method(spec)
    except ConfigError as exc:
        raise ValueError(f"inner method: {exc}") from None
    target = getattr(m, "second", m)
    if target.kind in ("sampling", "collab"):
        raise ValueError(f"inner method must run one chain; '{target.name}' is a {target.kind} method")
    bp = type(target).budget_param
    if max_thinking is not None and bp and bp not in target.params.model_fields_set:
        m = get_method(spec, **{bp: max_thinking})
    return m


# --------------------------------------------------------------------------- scorers

Scorer = Callable[[Task, "Sample"], "float | tuple[float, int]"]


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


def _score_logprob(task: Task, s: "Sample") -> float:
    lp = s.mean_logprob
    return lp if lp is not None else float("-inf")


def _score_short(task: Task, s: "Sample") -> float:
    return -float(s.length)


register_scorer("logprob", _score_logprob, logprobs=True)
register_scorer("short", _score_short)


def _check_scorer(v: str) -> str:
    if v not in SCORERS:
        raise ValueError(f"unknown scorer '{v}'; known: {', '.join(sorted(SCORERS))} (add one with register_scorer)")
    return v


# --------------------------------------------------------------------------- samples and votes


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


@lru_cache(maxsize=4096)
def same_answer(a: str, b: str) -> bool:
    """Equivalence-aware answer comparison (`5`, `5.0` and `\\frac{10}{2}` are one vote)."""
    if " ".join(a.split()) == " ".join(b.split()):
        return True
    return is_equivalent(a, b)


class Votes:
    """Answers grouped by equivalence, in order of first appearance."""

    def __init__(self, samples: Iterable[Sample] = ()):
        self.groups: list[list[Sample]] = []
        self.unanswered: list[Sample] = []
        for s in samples:
            self.add(s)

    def add(self, s: Sample) -> None:
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

    def ranked(self) -> list[list[Sample]]:
        """Groups by votes (desc); ties by first appearance."""
        return sorted(self.groups, key=lambda g: (-len(g), min(s.index for s in g)))

    def top(self) -> list[Sample] | None:
        r = self.ranked()
        return r[0] if r else None

    def top_count(self) -> int:
        t = self.top()
        return len(t) if t else 0

    def table(self) -> dict[str, int]:
        out = {g[0].answer: len(g) for g in self.ranked()}
        if self.unanswered:
            out["(none)"] = len(self.unanswered)
        return out


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


# --------------------------------------------------------------------------- backend proxy


class _Cancelled(BaseException):
    """Raised inside a sample's thread when short-m@k cancels it (BaseException so no
    `except Exception` in an inner method can swallow it)."""


class _Turns:
    """Whose stream may produce the next token: round-robin `quantum` tokens per sample
    (one in-process engine), or everyone at once (`free`, HTTP servers)."""

    def __init__(self, ids: Iterable[int], quantum: int, free: bool):
        self.cv = threading.Condition()
        self.order = list(ids)
        self.turn = self.order[0] if self.order else None
        self.quantum = quantum
        self.left = quantum
        self.free = free
        self.cancelled = False

    def wait(self, sid: int) -> None:
        with self.cv:
            while not self.cancelled and not self.free and self.turn != sid:
                self.cv.wait()
            if self.cancelled:
                raise _Cancelled()

    def tick(self, sid: int, n: int) -> None:
        if self.free:
            return
        with self.cv:
            if self.turn != sid:
                return
            self.left -= max(n, 1)
            if self.left <= 0 and len(self.order) > 1:
                i = self.order.index(sid)
                self.turn = self.order[(i + 1) % len(self.order)]
                self.left = self.quantum
                self.cv.notify_all()
            elif self.left <= 0:
                self.left = self.quantum

    def leave(self, sid: int) -> None:
        """Call with `cv` held."""
        if sid not in self.order:
            return
        i = self.order.index(sid)
        self.order.remove(sid)
        if self.turn == sid:
            self.turn = self.order[i % len(self.order)] if self.order else None
            self.left = self.quantum
        self.cv.notify_all()


_END = object()


def _next_or_end(gen):
    try:
        return next(gen)
    except StopIteration:
        return _END


class _SampleBackend(BaseBackend):
    """One sample's view of the backend: counts what its streams generate, records the
    logprobs of sampled tokens, and (short-m@k) runs every engine call on one engine
    thread and waits for its turn before each token."""

    def __init__(self, real: BaseBackend, *, sid: int = 0, logprobs: bool = False,
                 engine: ThreadPoolExecutor | None = None, turns: _Turns | None = None):
        self.real = real
        self.name = real.name
        self.model_id = real.model_id
        self.capabilities = real.capabilities
        self.family_override = getattr(real, "family_override", None)
        self.sid, self.want_logprobs, self.engine, self.turns = sid, logprobs, engine, turns
        self.generated = 0
        self.logprobs: list[float] = []
        self.open_streams: list["_ProxyStream"] = []

    def __getattr__(self, name: str):  # n_ctx, hidden_size, hidden_states_for, ...
        if name == "real":
            raise AttributeError(name)
        attr = getattr(self.real, name)
        if callable(attr) and self.engine is not None:
            return lambda *a, **kw: self._call(attr, *a, **kw)
        return attr

    def _call(self, fn, *a, **kw):
        if self.engine is None:
            return fn(*a, **kw)
        return self.engine.submit(fn, *a, **kw).result()

    def encode(self, text: str) -> list[int]:
        return self._call(self.real.encode, text)

    def count_tokens(self, text: str) -> int:
        return self._call(self.real.count_tokens, text)

    def render_chat(self, messages, add_generation_prompt=True, **kwargs) -> str:
        return self._call(self.real.render_chat, messages, add_generation_prompt, **kwargs)

    def stream(self, prompt: str, params: SamplingParams):
        sampled = params.temperature > 0
        if self.want_logprobs and sampled and params.logprobs is None:
            params = replace(params, logprobs=0)
        s = _ProxyStream(self, prompt, params, sampled)
        self.open_streams.append(s)
        return s

    def close_streams(self) -> None:
        """Close every stream the inner method left open (e.g. one it was iterating when
        cancelled). On an engine thread this must happen there: an in-process engine's
        generator holds the engine's lock in the thread that runs it."""
        for s in self.open_streams:
            s.close()
        self.open_streams.clear()

    def close(self) -> None:  # the real backend belongs to the caller
        pass


class _ProxyStream:
    def __init__(self, owner: _SampleBackend, prompt: str, params: SamplingParams, sampled: bool):
        self.o, self.sampled, self.done = owner, sampled, False
        self.gen = owner._call(owner.real.stream, prompt, params)

    def __iter__(self):
        return self

    def __next__(self) -> Chunk:
        o = self.o
        if self.done:
            raise StopIteration
        if o.turns is not None:
            try:
                o.turns.wait(o.sid)
            except _Cancelled:
                self.close()  # stop the engine now, whatever the caller does with the exception
                raise
        chunk = o._call(_next_or_end, self.gen)
        if chunk is _END:
            self.done = True
            self._forget()
            raise StopIteration
        o.generated += chunk.n_tokens
        if o.want_logprobs and self.sampled and chunk.logprob is not None:
            o.logprobs.append(chunk.logprob)
        if o.turns is not None:
            o.turns.tick(o.sid, chunk.n_tokens)
        return chunk

    def close(self) -> None:
        if self.done:
            return
        self.done = True
        self._forget()
        close = getattr(self.gen, "close", None)
        if close is not None:
            self.o._call(close)  # on the engine thread: the generator holds the engine's lock there

    def _forget(self) -> None:
        try:
            self.o.open_streams.remove(self)
        except ValueError:
            pass


# --------------------------------------------------------------------------- base class


class SampleParams(BaseModel):
    temperature: float = Field(0.7, gt=0, le=2, description="Sampling temperature of every chain.")
    max_thinking: int = Field(1024, gt=0, description="Thinking cap per sample (the inner method's budget, unless its spec sets one).")
    inner: str = Field("think", min_length=1, description="Single-chain method each sample runs: think, deer, budget(max_thinking=256), chain-of-draft+deer, ...")

    @field_validator("inner")
    @classmethod
    def _inner_ok(cls, v: str) -> str:
        build_inner(v)
        return v


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
    def sample(self, task: Task, i: int, *, engine=None, turns=None) -> Sample:
        """Run sample i (seed = task.seed + i) with the inner method."""
        seed = task.seed + i
        s = Sample(i, seed)
        backend = task.backend
        proxy = None
        if self.wants_logprobs() or engine is not None or turns is not None:
            proxy = _SampleBackend(backend, sid=i, logprobs=self.wants_logprobs(), engine=engine, turns=turns)
            backend = proxy
        st = replace(task, backend=backend, temperature=self.params.temperature, seed=seed,
                     pre_usage=Usage(), pre_trace=[])
        try:
            s.result = self.inner(st)
        except _Cancelled:
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

    # -- the result -----------------------------------------------------------------
    def combine(self, task: Task, samples: list[Sample], chosen: Sample, events: list[TraceEvent],
                *, extra_overhead: int = 0) -> Result:
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


def _majority(samples: list[Sample]) -> tuple[Sample, Votes]:
    """Majority vote; ties go to the answer seen first; the representative is that
    answer's first sample. With no answer at all, the first sample."""
    votes = Votes(samples)
    top = votes.top()
    done = [s for s in samples if s.result is not None]
    chosen = min(top, key=lambda s: s.index) if top else done[0]
    return chosen, votes


def _stop_event(n: int, why: str, **detail) -> TraceEvent:
    return TraceEvent(event="stop", detail={"samples": n, "why": why, **detail})


# --------------------------------------------------------------------------- methods


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
        chosen, votes = _majority(samples)
        ev = _stop_event(len(samples), f"fixed k={self.params.k}", votes=votes.table())
        return self.combine(task, samples, chosen, [ev])


class BoNParams(SampleParams):
    k: int = Field(8, ge=1, le=64, description="Number of samples.")
    scorer: str = Field("logprob", description="logprob (mean token logprob = -log perplexity), short (fewest tokens), or a name given to register_scorer.")

    @field_validator("scorer")
    @classmethod
    def _scorer_ok(cls, v: str) -> str:
        return _check_scorer(v)


@register
class BestOfN(SamplingMethod):
    name = "bon"
    summary = "Best-of-N: k sampled chains, keep the one a scorer likes best (default: highest mean token logprob; pluggable reward model)."
    reference = "Cobbe et al. 2021, Training Verifiers to Solve Math Word Problems (best-of-N with a scorer)"
    Params = BoNParams

    def wants_logprobs(self) -> bool:
        return SCORERS[self.params.scorer].logprobs

    def run(self, task: Task) -> Result:
        samples = self.batch(task, range(self.params.k))
        spent = self.score(task, samples, self.params.scorer)
        done = [s for s in samples if s.score is not None]
        chosen = max(done, key=lambda s: (s.score, -s.index))
        ev = _stop_event(len(samples), f"best of {len(samples)} by {self.params.scorer}", score=round(chosen.score, 4))
        return self.combine(task, samples, chosen, [ev], extra_overhead=spent)


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

    def settled(self, votes: Votes, seed: int) -> float:
        top = votes.top_count()
        if top == 0:
            return 0.0
        if self.params.criterion == "beta":
            return beta_settled(top, votes.n - top)
        counts = [len(g) for g in votes.groups] + ([len(votes.unanswered)] if votes.unanswered else [])
        if max(counts) != top:  # more unanswered than the top answer: not settled
            return 0.0
        return dirichlet_settled(counts, seed=seed)

    def run(self, task: Task) -> Result:
        p = self.params
        samples: list[Sample] = []
        votes = Votes()
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
        chosen, _ = _majority(samples)
        stopped = prob >= p.threshold and len(samples) >= p.min_samples
        why = (f"stopped after {len(samples)} samples, P(settled)={prob:.3f} >= {p.threshold}" if stopped
               else f"reached k={p.k}, P(settled)={prob:.3f} < {p.threshold}")
        ev = _stop_event(len(samples), why, p_settled=round(prob, 4), history=history, early=stopped and len(samples) < p.k,
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
        unanimous = False
        while len(samples) < p.k and not unanimous:
            window = self.batch(task, range(len(samples), min(p.k, len(samples) + p.window)))
            samples += window
            v = Votes(window)
            unanimous = len(window) == p.window and not v.unanswered and len(v.groups) == 1
        chosen, votes = _majority(samples)
        windows = math.ceil(len(samples) / p.window)
        why = (f"window {windows} unanimous: stopped after {len(samples)} samples" if unanimous
               else f"no unanimous window in {windows}: reached k={p.k}")
        ev = _stop_event(len(samples), why, windows=windows, early=unanimous and len(samples) < p.k, votes=votes.table())
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
        probs: dict[int, float] = {}
        for tok, lp in ((chunks[0].top_logprobs or {}) if chunks else {}).items():
            t = tok.strip()
            if len(t) == 1 and t in "123456789":
                probs[int(t)] = probs.get(int(t), 0.0) + math.exp(lp)
        if not probs:
            return 9.0, spent  # no digit: assume hard
        z = sum(probs.values())
        return sum(d * q for d, q in probs.items()) / z, spent

    def run(self, task: Task) -> Result:
        p = self.params
        spent = 0
        samples: list[Sample] = []
        if p.difficulty == "rating":
            rating, spent = self.rate(task)
            total = max(1, min(p.k, round(1 + (p.k - 1) * (rating - 1) / 8)))
            detail = {"rating": round(rating, 2)}
        else:
            samples = self.batch(task, range(p.pre))
            v = Votes(samples)
            top = v.top_count()
            d = 1.0 if top == 0 else (p.pre - top) / (p.pre - 1)
            total = p.pre if d == 0 else min(p.k, p.pre + math.ceil((p.k - p.pre) * d))
            detail = {"pre_answers": [s.answer for s in samples], "disagreement": round(d, 3)}
        samples += self.batch(task, range(len(samples), total))
        chosen, votes = _majority(samples)
        diff = TraceEvent(event="difficulty", detail={"method": p.difficulty, **detail, "allocated": total})
        ev = _stop_event(len(samples), f"difficulty ({p.difficulty}) allocated {total} of k={p.k} samples",
                         early=total < p.k, votes=votes.table())
        return self.combine(task, samples, chosen, [diff, ev], extra_overhead=spent)


class RPCParams(SampleParams):
    k: int = Field(8, ge=1, le=64, description="Number of samples.")
    prune: bool = Field(True, description="Reasoning pruning: drop the low-probability cluster of chains before voting.")
    min_keep: float = Field(0.5, gt=0, le=1, description="Never prune more than 1 - min_keep of the chains.")


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
        votes = Votes(kept)
        if votes.groups:
            best = max(votes.groups, key=lambda g: (sum(s.score for s in g), -min(s.index for s in g)))
            chosen = max(best, key=lambda s: (s.score, -s.index))
            scores = {g[0].answer: round(sum(s.score for s in g), 4) for g in votes.groups}
        else:
            chosen, scores = kept[0] if kept else done[0], {}
        ev = _stop_event(len(samples), f"perplexity consistency over {len(kept)} of {len(samples)} chains",
                         pruned=pruned, answer_scores=scores)
        return self.combine(task, samples, chosen, [ev])


class BoMParams(SampleParams):
    k: int = Field(8, ge=1, le=64, description="Number of samples.")
    min_share: float = Field(0.5, gt=0, le=1, description="Keep answers whose votes are >= this fraction of the top answer's votes.")
    scorer: str = Field("logprob", description="Scorer among the kept samples (see bon).")

    @field_validator("scorer")
    @classmethod
    def _scorer_ok(cls, v: str) -> str:
        return _check_scorer(v)


@register
class BestOfMajority(SamplingMethod):
    name = "bom"
    summary = "Best-of-Majority: keep only frequent answers (votes >= min_share x top), then pick the best-scored sample among them."
    reference = "Di et al. 2025, Best-of-Majority: Minimax-Optimal Strategy for Pass@k Inference Scaling"
    Params = BoMParams

    def wants_logprobs(self) -> bool:
        return SCORERS[self.params.scorer].logprobs

    def run(self, task: Task) -> Result:
        p = self.params
        samples = self.batch(task, range(p.k))
        spent = self.score(task, samples, p.scorer)
        votes = Votes(samples)
        top = votes.top_count()
        kept_groups = [g for g in votes.ranked() if len(g) >= p.min_share * top] if top else []
        pool = [s for g in kept_groups for s in g] or [s for s in samples if s.result is not None]
        chosen = max(pool, key=lambda s: (s.score if s.score is not None else float("-inf"), -s.index))
        ev = _stop_event(len(samples), f"best of {len(pool)} samples in {len(kept_groups)} frequent answer(s)",
                         kept=[g[0].answer for g in kept_groups], votes=votes.table())
        return self.combine(task, samples, chosen, [ev], extra_overhead=spent)


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
        engine = None if free else ThreadPoolExecutor(1, thread_name_prefix="leanthink-engine")
        turns = _Turns(range(p.k), p.quantum, free)
        samples: list[Sample | None] = [None] * p.k
        finished: list[int] = []
        errors: list[BaseException] = []
        state = {"left": p.k}

        def work(i: int) -> None:
            s = Sample(i, task.seed + i, status="error")
            try:
                s = self.sample(task, i, engine=engine, turns=turns)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                errors.append(exc)
                s.error = str(exc)
            finally:
                with turns.cv:
                    samples[i] = s
                    if s.status == "done" and s.result is not None:
                        finished.append(i)
                        if len(finished) >= p.m:
                            turns.cancelled = True  # every other chain stops at its next token
                    state["left"] -= 1
                    turns.leave(i)

        threads = [threading.Thread(target=work, args=(i,), name=f"leanthink-sample-{i}", daemon=True) for i in range(p.k)]
        try:
            for t in threads:
                t.start()
            with turns.cv:
                while len(finished) < p.m and state["left"] > 0:
                    turns.cv.wait()
                turns.cancelled = True
                turns.cv.notify_all()
            for t in threads:
                t.join()
        finally:
            if engine is not None:
                engine.shutdown(wait=True)
        if errors:
            raise errors[0]
        all_samples = [s for s in samples if s is not None]
        voters = [samples[i] for i in finished[: p.m]]
        cancelled = [s for s in all_samples if s.status == "cancelled"]
        if not voters:
            raise ConfigError("short-m@k: no chain finished")  # pragma: no cover - errors are raised above
        votes = Votes(voters)
        ranked = votes.ranked()
        if ranked:
            best_n = len(ranked[0])
            tied = [g for g in ranked if len(g) == best_n]
            group = min(tied, key=lambda g: min(s.length for s in g))
            chosen = min(group, key=lambda s: (s.length, s.index))
        else:
            chosen = min(voters, key=lambda s: (s.length, s.index))
        cancelled_tokens = sum(s.generated for s in cancelled)
        ev = TraceEvent(event="short_m_at_k", detail={
            "finished_order": finished, "voters": [s.index for s in voters], "cancelled": [s.index for s in cancelled],
            "cancelled_tokens": cancelled_tokens, "quantum": None if free else p.quantum,
            "mode": "threads" if free else "round-robin"})
        why = (f"{len(voters)} of k={p.k} finished first; cancelled {len(cancelled)} chain(s) after "
               f"{cancelled_tokens} generated tokens")
        stop = _stop_event(len(all_samples), why, votes=votes.table(), early=bool(cancelled))
        return self.combine(task, all_samples, chosen, [ev, stop])
