"""Decoding-level methods that shape one chain: caps, suppression, injected hints, restarts."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, Field, model_validator

from ..backends.base import SamplingParams, closing_stream
from ..result import Result, TraceEvent
from .base import Method, Task, register
from .engine import Chain, ChainOutput, Inject, ThinkState, build_prompt, to_result


class BudgetParams(BaseModel):
    max_thinking: int = Field(512, gt=0, description="Hard cap on thinking tokens; then the answer is forced.")
    min_thinking: int = Field(0, ge=0, description="Suppress an earlier end of thinking by appending `wait_text` (s1).")
    wait_text: str = Field("\nWait,", min_length=1, description="Appended when the model tries to stop before min_thinking.")
    max_waits: int = Field(4, ge=0, description="At most this many suppressions.")

    @model_validator(mode="after")
    def _order(self):
        if self.min_thinking >= self.max_thinking:
            raise ValueError("min_thinking must be smaller than max_thinking")
        return self


@register
class Budget(Method):
    name = "budget"
    summary = "Budget forcing (s1): cap thinking at N tokens, then force the end of thinking and the answer; optionally suppress an early end with 'Wait'."
    reference = "Muennighoff et al. 2025, s1: Simple test-time scaling"
    Params = BudgetParams
    budget_param: ClassVar[str] = "max_thinking"

    def run(self, task: Task) -> Result:
        p = self.params
        prompt = build_prompt(task)
        chain = Chain(task)
        out = chain.run(prompt, max_thinking=p.max_thinking)
        waits = 0
        # The model ended its reasoning before the minimum: drop its answer, append "Wait", go on.
        while out.closed_naturally and out.thinking_tokens < p.min_thinking and waits < p.max_waits:
            waits += 1
            out.trace.append(TraceEvent(event="suppress_end", at_token=out.thinking_tokens, detail={"wait": waits}))
            out.forced_tokens += task.backend.count_tokens(p.wait_text)
            out.overhead_tokens += out.answer_tokens  # the discarded early answer was spent, never shown
            out.answer_tokens = 0
            out = chain.run(prompt, max_thinking=p.max_thinking, reasoning_prefix=out.reasoning + p.wait_text, out=_fresh(out))
        out.trace.append(TraceEvent(event="budget", detail={"cap": p.max_thinking, "fired": out.finish_reason == "budget",
                                                             "thinking": out.thinking_tokens}))
        return to_result(task, self, out, prompt=prompt)


def _fresh(out: ChainOutput) -> ChainOutput:
    """Carry the counts into the continuation; the continuation rebuilds text and finish."""
    return ChainOutput(thinking_tokens=out.thinking_tokens, answer_tokens=out.answer_tokens, forced_tokens=out.forced_tokens,
                       overhead_tokens=out.overhead_tokens, trace=list(out.trace))


class NoThinkParams(BaseModel):
    max_answer: int = Field(1024, gt=0, description="Cap on answer tokens.")


NOTHINK_PREFILL = "Okay, I think I have finished thinking."
"""NoThinking's dummy thought (Ma et al. 2025)."""


@register
class NoThink(Method):
    name = "nothink"
    summary = "NoThinking: prefill a closed, trivial thinking block and let the model answer directly (it may still show work in the answer)."
    reference = "Ma et al. 2025, Reasoning Models Can Be Effective Without Thinking"
    Params = NoThinkParams

    def run(self, task: Task) -> Result:
        fam = task.family
        prompt = build_prompt(task, thinking=False)
        if fam.native_thinking:
            inject = f"{fam.think_start}\n{NOTHINK_PREFILL}\n{fam.think_end}\n\n"
        else:  # an instruct model has no thinking block to skip: ask it to answer without reasoning
            inject = "Final answer without reasoning: "
        out = ChainOutput(forced_tokens=task.backend.count_tokens(inject), trace=[TraceEvent(event="no_thinking")])
        text, n = "", 0
        with closing_stream(task.backend.stream(prompt + inject, SamplingParams(max_tokens=self.params.max_answer, temperature=task.temperature, seed=task.seed))) as stream:
            for chunk in stream:
                text += chunk.text
                n += chunk.n_tokens
        out.answer_text, out.answer_tokens = text.strip(), n
        out.finish_reason = "stop"
        return to_result(task, self, out, prompt=prompt)


class ElasticParams(BaseModel):
    max_thinking: int = Field(512, gt=0, description="Budget for the thinking phase.")
    max_solution: int = Field(128, gt=0, description="Separate budget for the solution phase after thinking.")


@register
class Elastic(Method):
    name = "elastic"
    summary = "Elastic Reasoning: separate budgets for thinking and for the solution; a cut solution is closed with a forced answer."
    reference = "Xu et al. 2025, Scalable Chain of Thoughts via Elastic Reasoning"
    Params = ElasticParams
    budget_param: ClassVar[str] = "max_thinking"

    def run(self, task: Task) -> Result:
        from ..grading import extract_answer

        p = self.params
        prompt = build_prompt(task)
        chain = Chain(task)
        out = chain.run(prompt, max_thinking=p.max_thinking, max_answer=p.max_solution)
        if out.closed_naturally and out.finish_reason == "length" and extract_answer(out.answer_text) is None:
            # the solution hit its budget: force the boxed answer after what was written
            inject = task.family.answer_prefix
            text, n, _ = chain.complete_boxed(prompt + _raw_continuation(task, out) + inject, 40)
            out.forced_tokens += task.backend.count_tokens(inject)
            out.answer_tokens += n
            out.answer_text = out.answer_text + inject + text
            out.finish_reason = "budget"
            out.trace.append(TraceEvent(event="solution_cut", at_token=out.thinking_tokens + out.answer_tokens,
                                        detail={"max_solution": p.max_solution}))
        out.trace.append(TraceEvent(event="budgets", detail={"thinking": out.thinking_tokens, "solution": out.answer_tokens}))
        return to_result(task, self, out, prompt=prompt)


def _raw_continuation(task: Task, out: ChainOutput) -> str:
    """The assistant text so far, as the model wrote it (reasoning + end marker + answer)."""
    fam = task.family
    if fam.end_in_answer:
        return out.reasoning + " " + out.answer_text
    return out.reasoning + f"\n{fam.think_end}\n\n" + out.answer_text


class HintParams(BaseModel):
    max_thinking: int = Field(4096, gt=0, description="Safety cap on thinking tokens.")
    hint: str = Field(" (I should be concise and get to the answer.) ", min_length=1, description="Text injected into the reasoning.")
    interval: int = Field(128, gt=0, description="Tokens before the first injection.")
    alpha: float = Field(0.5, ge=0, le=4, description="Adaptive interval: next injection after max(interval, alpha * tokens so far).")
    max_hints: int = Field(8, ge=1, description="At most this many injections.")


@register
class ConciseHint(Method):
    name = "concise-hint"
    summary = "ConciseHint: inject a short 'be concise' hint into the reasoning at adaptive intervals."
    reference = "Tang et al. 2025, ConciseHint: Boosting Efficient Reasoning via Continuous Concise Hints during Generation"
    Params = HintParams
    budget_param: ClassVar[str] = "max_thinking"

    def run(self, task: Task) -> Result:
        p = self.params
        prompt = build_prompt(task)
        state = {"next": p.interval, "count": 0}

        def controller(s: ThinkState) -> Inject | None:
            if state["count"] < p.max_hints and s.n_tokens >= state["next"] and s.chunk.text.endswith((" ", "\n", ".", ",")):
                state["count"] += 1
                state["next"] = s.n_tokens + max(p.interval, int(p.alpha * s.n_tokens))
                return Inject(p.hint, event="hint", detail={"n": state["count"]})
            return None

        out = Chain(task).run(prompt, max_thinking=p.max_thinking, controller=controller)
        return to_result(task, self, out, prompt=prompt)


class InftyParams(BaseModel):
    segment_tokens: int = Field(256, ge=16, description="Reasoning tokens per segment before summarising.")
    max_segments: int = Field(4, ge=1, le=32, description="Segments before the answer is forced.")
    summary_tokens: int = Field(128, ge=8, description="Cap on each progress summary.")


_SUMMARY = ("Summarise the progress of the reasoning below in a few sentences: the facts established and the "
            "intermediate results, so the work can continue from the summary alone.\n\nQuestion: {q}\n\nReasoning:\n{r}")


@register
class InftyThink(Method):
    name = "inftythink"
    summary = "InftyThink (training-free): reason in bounded segments; after each, summarise progress and restart from question + summary."
    reference = "Yan et al. 2025, InftyThink: Breaking the Length Limits of Long-Context Reasoning"
    Params = InftyParams

    def run(self, task: Task) -> Result:
        p = self.params
        prompt = build_prompt(task)
        chain = Chain(task)
        out = ChainOutput()
        summary, shown = "", []
        for seg in range(p.max_segments):
            prefix = f"Progress so far: {summary}\nContinuing:\n" if summary else ""
            last = seg == p.max_segments - 1
            seg_out = chain.run(prompt, max_thinking=p.segment_tokens, reasoning_prefix=prefix, answer_on_cut=last)
            seg_reasoning = seg_out.reasoning.removeprefix(prefix.strip()).strip()
            shown.append(seg_reasoning)
            out.thinking_tokens += seg_out.thinking_tokens
            if prefix:
                out.forced_tokens += task.backend.count_tokens(prefix)
            if seg_out.closed_naturally or seg == p.max_segments - 1:
                out.answer_tokens += seg_out.answer_tokens
                out.forced_tokens += seg_out.forced_tokens
                out.answer_text, out.finish_reason = seg_out.answer_text, seg_out.finish_reason
                out.trace += seg_out.trace
                out.trace.append(TraceEvent(event="segments", detail={"used": seg + 1}))
                break
            # the segment ran out of tokens: summarise it and restart from question + summary
            summary, n = self._summarise(task, summary, seg_reasoning)
            out.overhead_tokens += n
            out.trace.append(TraceEvent(event="summarise", at_token=out.thinking_tokens, detail={"segment": seg + 1, "summary_tokens": n}))
        out.reasoning = "\n\n[summary → next segment]\n\n".join(shown)
        return to_result(task, self, out, prompt=prompt)

    def _summarise(self, task: Task, previous: str, reasoning: str) -> tuple[str, int]:
        text = (previous + "\n" if previous else "") + reasoning
        msg = task.backend.render_chat([{"role": "user", "content": _SUMMARY.format(q=task.question, r=text)}])
        chunks = list(task.backend.stream(msg, SamplingParams(max_tokens=self.params.summary_tokens, temperature=0.0)))
        return "".join(c.text for c in chunks).strip(), sum(c.n_tokens for c in chunks)
