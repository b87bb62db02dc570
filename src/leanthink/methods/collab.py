"""Collaboration methods: a cheap path and an expensive path share one question.

  route        System-1/System-2 routing (a cascade): answer fast first (`direct` on a small
               model, or on the same model), escalate to full thinking on the task's model
               only when a confidence signal is low: the answer's probability, or the
               agreement of 2-3 fast samples.
  spec-reason  SpecReason: a small model proposes each reasoning step; the task's model
               scores it with one 0-9 token (read from its top logprobs) and regenerates the
               step itself if the score is below the threshold.
  probe-exit   "Reasoning Models Know When They're Right": a linear probe on the last-layer
               hidden state at step ends predicts whether the answer forced there is right;
               exit when it is confident. Train the probe with `leanthink probe train`
               (`leanthink.probes.train_probe`); needs the transformers backend.

The task's backend is the "large" model. The second model (`small_model`) and the probe
(`probe`) are names the methods resolve through the task's loader (`task.models`), never
by loading anything themselves: in the library and CLI a name is any model string or probe
path (`small`, the default, is qwen2.5-coder-0.5b); on a server it is one of the names the
operator registered (`--extra-model`, `--probe`). Validating the parameters touches no
file: a probe is read when the method runs (or at server start). Tokens of both models
count in `Result.usage` (a token is a token); the trace splits them per model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import ClassVar, Literal

from pydantic import BaseModel, Field, field_validator

from ..backends.base import BaseBackend, SamplingParams, closing_stream
from ..errors import ConfigError
from ..grading import extract_answer
from ..reasoning import StreamSplitter, family_for
from ..loading import SMALL
from ..result import Result, TraceEvent, Usage
from .base import Method, Resource, Task, register
from .engine import Chain, ChainOutput, Decision, Exit, Pause, ThinkState, boxed_with_probs, build_prompt, to_result
from .sampling import Votes, build_inner


def task_on(task: Task, backend: BaseBackend, **changes) -> Task:
    """The same question on another backend (its own model family)."""
    fam = family_for(backend.model_id, backend.family_override)
    return replace(task, backend=backend, family=fam, pre_usage=Usage(), pre_trace=[], **changes)


def answer_prob(toks: list[tuple[str, float]]) -> float:
    """Probability of the answer string: product of its tokens' probabilities (a final
    token that is only the closing brace is left out)."""
    lps = [lp for _, lp in toks]
    if len(toks) > 1 and toks[-1][0].strip() == "}":
        lps = lps[:-1]
    return math.exp(sum(lps)) if lps else 0.0


# --------------------------------------------------------------------------- route


@dataclass
class FastAnswer:
    answer: str | None
    answer_text: str
    reasoning: str
    prompt: str
    thinking: int
    answer_tokens: int
    forced: int
    overhead: int
    confidence: float | None
    index: int = 0
    """Position among the fast samples (breaks ties in the agreement vote)."""

    @property
    def total(self) -> int:
        return self.thinking + self.answer_tokens + self.forced + self.overhead


class RouteParams(BaseModel):
    signal: Literal["prob", "agreement"] = Field("prob", description="prob: probability of the fast (greedy) answer; agreement: top share of n_fast sampled fast answers.")
    threshold: float = Field(0.8, gt=0, le=1, description="Escalate when the confidence is below this.")
    small_model: str | None = Field(SMALL, description="Model of the fast path; none = the task's own model. Library/CLI: a model string (`small` = qwen2.5-coder-0.5b); server: an extra model the operator registered (`small` by default).")
    n_fast: int = Field(3, ge=2, le=8, description="Fast samples for signal=agreement.")
    fast_temperature: float = Field(0.7, gt=0, le=2, description="Temperature of the fast samples (agreement).")
    fast_thinking: int = Field(0, ge=0, description="0: the fast path answers directly; N: it thinks up to N tokens first.")
    slow: str = Field("think", min_length=1, description="Single-chain method of the escalation, on the task's model.")
    max_thinking: int = Field(4096, gt=0, description="Thinking cap of the escalation (unless `slow` sets its own).")

    @field_validator("slow")
    @classmethod
    def _slow_ok(cls, v: str) -> str:
        build_inner(v)
        return v

    @field_validator("small_model")
    @classmethod
    def _model_ok(cls, v):
        if v is not None and (not v.strip() or v.strip().lower() == "none"):
            return None
        return v if v is None else v.strip()


@register
class Route(Method):
    name = "route"
    kind = "collab"
    summary = "System-1/System-2 routing: answer fast (direct, small model) and escalate to thinking on the task's model only when the fast answer's confidence is low."
    reference = "Chen et al. 2023, FrugalGPT (LLM cascades); Ong et al. 2024, RouteLLM"
    Params = RouteParams
    budget_param: ClassVar[str] = "max_thinking"

    def __init__(self, **params):
        super().__init__(**params)
        self.slow = build_inner(self.params.slow, self.params.max_thinking)

    def check(self, backend: BaseBackend) -> None:
        self.slow.check(backend)
        if self.params.small_model is None:
            backend.require({"logprobs"} if self.params.signal == "prob" else set(), "method 'route'")

    def resources(self) -> list[Resource]:
        small = [] if self.params.small_model is None else [Resource("small_model", "model", self.params.small_model)]
        return small + self.slow.resources()

    def fast_backend(self, task: Task) -> BaseBackend:
        if self.params.small_model is None:
            return task.backend
        be = task.models.load(self.params.small_model)
        be.require({"prefix_continuation"} | ({"logprobs"} if self.params.signal == "prob" else set()), "route's fast model")
        return be

    def fast_answer(self, ft: Task, temperature: float, seed: int, want_prob: bool) -> FastAnswer:
        fam, be = ft.family, ft.backend
        lp = 0 if want_prob else None
        if self.params.fast_thinking == 0:
            prompt = build_prompt(ft, thinking=False)
            empty = fam.empty_thinking()
            inject = empty + fam.answer_prefix if empty else fam.answer_prefix.lstrip()
            text, n, toks = boxed_with_probs(be, prompt + inject, SamplingParams(max_tokens=40, temperature=temperature, seed=seed, logprobs=lp))
            answer_text = fam.answer_prefix.strip() + text
            return FastAnswer(extract_answer(answer_text), answer_text, "", prompt, 0, n, be.count_tokens(inject), 0,
                              answer_prob(toks) if want_prob else None)
        prompt = build_prompt(ft)
        out = Chain(ft, temperature=temperature, seed=seed).run(prompt, max_thinking=self.params.fast_thinking, max_answer=256)
        conf, extra = None, 0
        if want_prob:  # re-read the answer greedily after the reasoning, with logprobs
            inject = fam.force_end()
            _, n, toks = boxed_with_probs(be, prompt + out.reasoning.rstrip() + inject, SamplingParams(max_tokens=40, temperature=0.0, logprobs=0))
            conf, extra = answer_prob(toks), n + be.count_tokens(inject)
        return FastAnswer(extract_answer(out.answer_text), out.answer_text, out.reasoning, prompt, out.thinking_tokens,
                          out.answer_tokens, out.forced_tokens, out.overhead_tokens + extra, conf)

    def run(self, task: Task) -> Result:
        p = self.params
        fb = self.fast_backend(task)
        ft = task_on(task, fb)
        if p.signal == "prob":
            fast = [self.fast_answer(ft, 0.0, task.seed, True)]
            conf = fast[0].confidence if fast[0].answer is not None else 0.0
            chosen = fast[0]
        else:
            fast = [replace(self.fast_answer(ft, p.fast_temperature, task.seed + i, False), index=i)
                    for i in range(p.n_fast)]
            top = Votes(fast).top()
            conf = len(top) / len(fast) if top else 0.0
            chosen = min(top, key=lambda f: f.index) if top else fast[0]
        escalate = chosen.answer is None or conf < p.threshold
        fast_tokens = sum(f.total for f in fast)
        route = TraceEvent(event="route", detail={
            "escalated": escalate, "signal": p.signal, "confidence": round(conf, 4), "threshold": p.threshold,
            "fast_model": fb.model_id, "fast_answers": [f.answer for f in fast], "fast_tokens": fast_tokens,
        })
        if escalate:
            res = self.slow(replace(task, pre_usage=Usage(), pre_trace=[]))
            u = res.usage
            usage = Usage(prompt=u.prompt, thinking=u.thinking, answer=u.answer, forced=u.forced,
                          overhead=u.overhead + fast_tokens).add(task.pre_usage)
            route.detail["slow_model"] = task.backend.model_id
            return res.model_copy(update=dict(method=self.spec, params=self.param_dict(), usage=usage,
                                              samples=len(fast) + 1, trace=list(task.pre_trace) + [route] + list(res.trace)))
        others = fast_tokens - chosen.total
        usage = Usage(prompt=fb.count_tokens(chosen.prompt), thinking=chosen.thinking, answer=chosen.answer_tokens,
                      forced=chosen.forced, overhead=chosen.overhead + others).add(task.pre_usage)
        return Result(
            question=task.question, method=self.spec, params=self.param_dict(), model=task.backend.model_id,
            backend=task.backend.name, emulated_thinking=ft.family.emulated, answer=chosen.answer,
            answer_text=chosen.answer_text, reasoning=chosen.reasoning, finish_reason="stop", usage=usage,
            prompt=chosen.prompt, samples=len(fast), trace=list(task.pre_trace) + [route],
        )


# --------------------------------------------------------------------------- spec-reason


_JUDGE = ("Question: {q}\n\nReasoning so far:\n{r}\n\nProposed next step:\n{s}\n\n"
          "Is the proposed next step correct and useful for solving the question? Rate it from 0 (wrong or "
          "useless) to 9 (certainly correct and useful). Reply with a single digit.")
_JUDGE_PREFILL = "Rating: "


class SpecParams(BaseModel):
    small_model: str | None = Field(SMALL, description="Model that proposes each step. Library/CLI: a model string (`small` = qwen2.5-coder-0.5b); server: an extra model the operator registered (`small` by default).")
    threshold: float = Field(7.0, ge=0, le=9, description="Accept a proposed step when the large model's 0-9 score (expected value) is at least this.")
    step: Literal["paragraph", "line"] = Field("paragraph", description="A step ends at a blank line (paragraph) or a newline (line).")
    max_step_tokens: int = Field(96, ge=4, description="Cap on one step.")
    max_thinking: int = Field(1024, gt=0, description="Cap on the reasoning (accepted + regenerated steps).")
    max_steps: int = Field(64, ge=1, description="Most steps.")

    @field_validator("small_model")
    @classmethod
    def _model_ok(cls, v):
        if v is None or not v.strip() or v.strip().lower() == "none":
            raise ValueError("spec-reason needs a small model (a model string; on a server, an extra model name)")
        return v.strip()


@dataclass
class StepOut:
    text: str
    tokens: int
    """Tokens of the step (reasoning part)."""
    after: int
    """Tokens generated after the model closed its reasoning (discarded: the large model answers)."""
    closed: bool
    """The reasoning ended in this step (end marker or end of sequence)."""


def gen_step(task: Task, prefix: str, cap: int, delim: str, seed: int) -> StepOut:
    """One reasoning step from `prefix`: up to the delimiter, the end of reasoning, or `cap` tokens."""
    be, fam = task.backend, task.family
    splitter = StreamSplitter(fam, started_inside=True)
    text, tokens, after, closed = "", 0, 0, False
    with closing_stream(be.stream(prefix, SamplingParams(max_tokens=cap + 64, temperature=task.temperature, seed=seed))) as stream:
        for chunk in stream:
            was_open = not splitter.closed
            for channel, t in splitter.feed(chunk.text):
                if channel == "reasoning":
                    text += t
            if was_open:
                tokens += chunk.n_tokens
            else:
                after += chunk.n_tokens
            if splitter.closed:
                closed = True
                break
            body = text.lstrip()
            cut = body.find(delim)
            if cut > 0:
                text = text[: len(text) - len(body)] + body[: cut + len(delim)]
                break
            if chunk.finish_reason == "stop":
                closed = True
                break
            if tokens >= cap or chunk.finish_reason:
                text += "".join(t for ch, t in splitter.flush() if ch == "reasoning")
                break
    return StepOut(text, tokens, after, closed)


@dataclass
class _SpecRun:
    """One spec-reason run: the large (`lt`) and small (`st`) tasks with their prompts, and
    what the steps accumulate (the reasoning so far, token counts, judge scores)."""

    lt: Task
    st: Task
    pl: str
    ps: str
    delim: str
    out: ChainOutput = field(default_factory=ChainOutput)
    reasoning: str = ""
    stats: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("proposed", "accepted", "small_tokens", "large_tokens", "judge_tokens", "rejected_tokens"), 0))
    scores: list[float] = field(default_factory=list)

    def large_step(self, cap: int, seed: int) -> StepOut:
        """The large model writes the next step itself; returns it (already added to the reasoning)."""
        step = gen_step(self.lt, self.pl + self.reasoning, cap, self.delim, seed)
        self.stats["large_tokens"] += step.tokens + step.after
        self.reasoning += step.text
        self.out.thinking_tokens += step.tokens
        self.out.overhead_tokens += step.after
        return step


@register
class SpecReason(Method):
    name = "spec-reason"
    kind = "collab"
    summary = "SpecReason: a small model proposes each reasoning step; the task's model scores it (one 0-9 token) and rewrites it if the score is low."
    reference = "Pan et al. 2025, SpecReason: Fast and Accurate Inference-Time Compute via Speculative Reasoning"
    Params = SpecParams
    needs = frozenset({"top_logprobs", "prefix_continuation"})
    budget_param: ClassVar[str] = "max_thinking"

    def resources(self) -> list[Resource]:
        return [Resource("small_model", "model", self.params.small_model)]

    def judge(self, lt: Task, reasoning: str, step: str) -> tuple[float, int, float]:
        """(expected 0-9 score, tokens generated, probability mass on digits)."""
        fam = lt.family
        msg = _JUDGE.format(q=lt.question, r=reasoning.strip() or "(nothing yet)", s=step.strip())
        prompt = lt.backend.render_chat([{"role": "user", "content": msg}], **dict(fam.template_kwargs_nothink))
        prompt += fam.empty_thinking() + _JUDGE_PREFILL
        chunks = list(lt.backend.stream(prompt, SamplingParams(max_tokens=1, temperature=0.0, logprobs=20)))
        probs: dict[int, float] = {}
        for tok, lp in ((chunks[0].top_logprobs or {}) if chunks else {}).items():
            t = tok.strip()
            if len(t) == 1 and t.isdigit():
                probs[int(t)] = probs.get(int(t), 0.0) + math.exp(lp)
        mass = sum(probs.values())
        score = sum(d * q for d, q in probs.items()) / mass if mass > 0 else 0.0
        return score, sum(c.n_tokens for c in chunks), mass

    def run(self, task: Task) -> Result:
        p = self.params
        small = task.models.load(p.small_model)
        small.require({"prefix_continuation"}, "spec-reason's small model")
        lt = replace(task, pre_usage=Usage(), pre_trace=[])
        st = task_on(task, small)
        pl, ps = build_prompt(lt), build_prompt(st)
        r = _SpecRun(lt, st, pl, ps, "\n\n" if p.step == "paragraph" else "\n")
        finished = False
        for i in range(p.max_steps):
            room = p.max_thinking - r.out.thinking_tokens
            if room <= 0:
                break
            if self._step(r, min(p.max_step_tokens, room), task.seed + i):
                finished = True
                break
        return self._answer(task, small, r, finished)

    def _step(self, r: _SpecRun, cap: int, seed: int) -> bool:
        """Propose, judge and accept or rewrite one step; True when the reasoning has ended."""
        prop = gen_step(r.st, r.ps + r.reasoning, cap, r.delim, seed)
        r.stats["proposed"] += 1
        r.stats["small_tokens"] += prop.tokens + prop.after
        r.out.overhead_tokens += prop.after
        if not prop.text.strip():
            # the small model wants to stop here: no step to judge, the large model answers
            r.out.overhead_tokens += prop.tokens
            r.stats["rejected_tokens"] += prop.tokens
            if prop.closed:
                return True
            step = r.large_step(cap, seed)
            return step.closed or not step.text.strip()
        score, jt, _ = self.judge(r.lt, r.reasoning, prop.text)
        r.scores.append(round(score, 2))
        r.stats["judge_tokens"] += jt
        r.stats["large_tokens"] += jt
        r.out.overhead_tokens += jt
        if score >= self.params.threshold:
            r.stats["accepted"] += 1
            r.reasoning += prop.text
            r.out.thinking_tokens += prop.tokens
            return prop.closed
        r.stats["rejected_tokens"] += prop.tokens
        r.out.overhead_tokens += prop.tokens
        step = r.large_step(cap, seed)
        return step.closed or not step.text.strip()

    def _answer(self, task: Task, small: BaseBackend, r: _SpecRun, finished: bool) -> Result:
        """The large model reads the answer off the reasoning; the result carries both models' counts."""
        out, stats = r.out, r.stats
        text, forced, gen = Chain(r.lt).force_answer(r.pl, r.reasoning)
        stats["large_tokens"] += gen
        out.answer_text, out.forced_tokens, out.answer_tokens = text, forced, gen
        out.reasoning = r.reasoning.strip()
        out.finish_reason = "stop" if finished else "budget"
        judged = len(r.scores)
        ev = TraceEvent(event="spec_reason", detail={
            **stats, "judged": judged, "acceptance_rate": round(stats["accepted"] / judged, 4) if judged else None,
            "scores": r.scores, "small_model": small.model_id, "large_model": task.backend.model_id,
        })
        res = to_result(r.lt, self, out, prompt=r.pl, extra_trace=[ev])
        res.usage = res.usage.add(task.pre_usage)
        res.trace = list(task.pre_trace) + res.trace
        return res


# --------------------------------------------------------------------------- probe-exit


class ProbeExitParams(BaseModel):
    probe: str = Field("", validate_default=True, description="Library/CLI: a probe file from `leanthink probe train` (JSON, format leanthink-probe/1), read when the method runs; server: a probe name the operator registered (--probe NAME=PATH).")
    threshold: float = Field(0.9, gt=0, le=1, description="Exit when the probe's P(correct) reaches this.")
    min_tokens: int = Field(0, ge=0, description="No check before this many thinking tokens.")
    max_thinking: int = Field(4096, gt=0, description="Safety cap on thinking tokens.")
    max_checks: int = Field(64, ge=1, description="Stop checking after this many step ends.")

    @field_validator("probe")
    @classmethod
    def _probe_ok(cls, v: str) -> str:
        # no file access here: parameters are validated on a server's event loop, for
        # values a client sent; the probe is read by the task's loader when the method runs
        if not v or not v.strip():
            raise ValueError("probe-exit needs probe=PATH (train one with `leanthink probe train`)")
        return v.strip()


@register
class ProbeExit(Method):
    name = "probe-exit"
    kind = "collab"
    summary = "Probe exit: a linear probe on the hidden state at each step end predicts whether the answer so far is right; exit when it is confident."
    reference = "Zhang et al. 2025, Reasoning Models Know When They're Right: Probing Hidden States for Self-Verification"
    Params = ProbeExitParams
    needs = frozenset({"hidden_states", "prefix_continuation"})
    budget_param: ClassVar[str] = "max_thinking"

    def resources(self) -> list[Resource]:
        return [Resource("probe", "probe", self.params.probe)]

    def run(self, task: Task) -> Result:
        p = self.params
        probe = task.models.probe(p.probe)
        be = task.backend
        size = be.hidden_size
        if size and size != probe.dim:
            raise ConfigError(f"probe '{p.probe}' was trained on hidden states of size {probe.dim} "
                              f"({probe.model_id}); {be.model_id} has {size}")
        delim = probe.step_delimiter
        prompt = build_prompt(task)
        chain = Chain(task)
        state = {"checks": 0, "checked_len": 0, "probs": []}

        def controller(s: ThinkState) -> Decision | None:
            if s.n_tokens < p.min_tokens or state["checks"] >= p.max_checks:
                return None
            text = s.reasoning
            if not text.endswith(delim) or not text.strip() or len(text) <= state["checked_len"]:
                return None
            if not s.paused:  # never run the model while a stream is suspended
                return Pause()
            state["checked_len"] = len(text)
            state["checks"] += 1
            prob = probe.predict(be.hidden_states_for(prompt + text)[-1])
            state["probs"].append(round(prob, 4))
            if prob >= p.threshold:
                return Exit(reasoning=text, detail={"probe_prob": round(prob, 4), "checks": state["checks"]})
            return None

        out = chain.run(prompt, max_thinking=p.max_thinking, controller=controller)
        ev = TraceEvent(event="probe_checks", detail={
            "n": state["checks"], "probs": state["probs"], "exited": out.finish_reason == "exit",
            "probe_model": probe.model_id, "model_match": probe.model_id == be.model_id,
            "seen_in_training": probe.seen(task.question),
        })
        return to_result(task, self, out, prompt=prompt, extra_trace=[ev])
