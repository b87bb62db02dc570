"""Prompt-level methods: they only change the instructions, so they compose with any
decoding-level method (`chain-of-draft+deer`). Run alone, they reason like `think`."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import ClassVar, Literal

from pydantic import BaseModel, Field, model_validator

from ..backends.base import SamplingParams
from ..result import Result, TraceEvent, Usage
from .base import Method, PromptStyle, Task, register
from .engine import Chain, build_prompt, to_result


class PromptParams(BaseModel):
    max_thinking: int = Field(4096, gt=0, description="Safety cap on thinking tokens when run alone.")


class PromptMethod(Method):
    kind = "prompt"
    budget_param: ClassVar[str | None] = "max_thinking"

    def style(self, task: Task) -> tuple[PromptStyle, Usage, list[TraceEvent]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def prepare(self, task: Task) -> Task:
        style, spent, trace = self.style(task)
        merged = PromptStyle(
            system_extra="\n\n".join(x for x in (task.style.system_extra, style.system_extra) if x),
            user_suffix="\n\n".join(x for x in (task.style.user_suffix, style.user_suffix) if x),
        )
        return replace(task, style=merged, pre_usage=task.pre_usage.add(spent), pre_trace=task.pre_trace + trace)

    def run(self, task: Task) -> Result:
        prompt = build_prompt(task)
        out = Chain(task).run(prompt, max_thinking=self.params.max_thinking)
        return to_result(task, self, out, prompt=prompt)


#: TokenSkip's ratio condition, appended to the user turn where every prompt method puts its
#: `user_suffix`. Training data built by `leanthink train compress tokenskip` carries the same line, so a
#: model fine-tuned on it is steered to a compression ratio at inference by `tokenskip(ratio=γ)`.
TOKENSKIP_SUFFIX = "Compression ratio: {ratio:g}"


class TokenSkipParams(PromptParams):
    ratio: float = Field(0.6, gt=0.0, le=1.0, description="Compression ratio γ in (0, 1] the model was trained to follow (1 = uncompressed).")


@register
class TokenSkip(PromptMethod):
    name = "tokenskip"
    summary = "TokenSkip inference: ask a model fine-tuned on ratio-conditioned pruned chains for compression ratio γ."
    reference = "Xia et al. 2025, TokenSkip: Controllable Chain-of-Thought Compression in LLMs"
    Params = TokenSkipParams

    def style(self, task):
        return PromptStyle(user_suffix=TOKENSKIP_SUFFIX.format(ratio=self.params.ratio)), Usage(), []


class CoDParams(PromptParams):
    words_per_step: int = Field(5, ge=1, le=50, description="Word limit per reasoning step (paper: 5).")


@register
class ChainOfDraft(PromptMethod):
    name = "chain-of-draft"
    summary = "Chain of Draft: reason in terse drafts of a few words per step."
    reference = "Xu et al. 2025, Chain of Draft: Thinking Faster by Writing Less"
    Params = CoDParams

    def style(self, task):
        n = self.params.words_per_step
        text = (f"Think step by step, but write only a minimal draft of each step, {n} words at most per step. "
                "Then give the final answer.")
        return PromptStyle(user_suffix=text), Usage(), []


class ConciseParams(PromptParams):
    word_limit: int | None = Field(None, ge=1, description="Optional hard word limit stated in the prompt.")


@register
class ConciseCoT(PromptMethod):
    name = "concise-cot"
    summary = "Concise chain of thought: ask the model to be concise (optionally with a word limit)."
    reference = "Renze & Guven 2024, The Benefits of a Concise Chain of Thought; Nayab et al. 2024, Concise Thoughts"
    Params = ConciseParams

    def style(self, task):
        text = "Be concise."
        if self.params.word_limit:
            text += f" Limit your reasoning to {self.params.word_limit} words."
        return PromptStyle(user_suffix=text), Usage(), []


SOT_PARADIGMS = {
    "conceptual_chaining": (
        "Reason as a chain of key concepts linked by arrows (A → B → C): name each idea in a few words, "
        "no full sentences."
    ),
    "chunked_symbolism": (
        "Reason in compact symbolic chunks: define variables, then write one equation or calculation per line, "
        "no prose."
    ),
    "expert_lexicons": (
        "Reason like a domain expert writing notes to a colleague: use the field's standard abbreviations, "
        "symbols and jargon, as briefly as possible."
    ),
}
_ROUTER_PROMPT = (
    "Classify how this question is best reasoned about. Reply with one letter.\n"
    "A: conceptual (commonsense, multi-hop facts, logic)\n"
    "B: calculation (arithmetic, algebra, word problems with numbers)\n"
    "C: specialist (medicine, law, science or other technical jargon)\n\nQuestion: {q}\n\nAnswer:"
)
_LETTER = {"A": "conceptual_chaining", "B": "chunked_symbolism", "C": "expert_lexicons"}


def route_by_rules(question: str) -> str:
    """A transparent fallback router: numbers and operators → symbolism, jargon → lexicons."""
    digits = len(re.findall(r"\d", question))
    ops = len(re.findall(r"[=+\-*/^$\\]", question))
    if digits >= 2 or ops >= 2:
        return "chunked_symbolism"
    if re.search(r"\b(diagnos|patient|clinical|legal|statute|molecul|enzyme|quantum|theorem)\w*", question, re.I):
        return "expert_lexicons"
    return "conceptual_chaining"


class SoTParams(PromptParams):
    paradigm: Literal["auto", "conceptual_chaining", "chunked_symbolism", "expert_lexicons"] = Field(
        "auto", description="Fixed paradigm, or auto to route per question.")
    router: Literal["llm", "rules"] = Field("llm", description="auto routing: zero-shot by the model itself (cost counted as overhead) or keyword rules.")


@register
class SketchOfThought(PromptMethod):
    name = "sketch-of-thought"
    summary = "Sketch-of-Thought: three compact reasoning paradigms and a router that picks one per question."
    reference = "Aytes et al. 2025, Sketch-of-Thought: Efficient LLM Reasoning with Adaptive Cognitive-Inspired Sketching"
    Params = SoTParams

    def route(self, task: Task) -> tuple[str, int, dict]:
        if self.params.paradigm != "auto":
            return self.params.paradigm, 0, {"router": "fixed"}
        if self.params.router == "rules":
            return route_by_rules(task.question), 0, {"router": "rules"}
        prompt = task.backend.render_chat([{"role": "user", "content": _ROUTER_PROMPT.format(q=task.question)}])
        chunks = list(task.backend.stream(prompt, SamplingParams(max_tokens=1, temperature=0.0, logprobs=5)))
        spent = sum(c.n_tokens for c in chunks)
        scores = {}
        for c in chunks[:1]:
            for tok, lp in (c.top_logprobs or {c.text: 0.0}).items():
                letter = tok.strip().upper()[:1]
                if letter in _LETTER and letter not in scores:
                    scores[letter] = lp
        if not scores:
            return route_by_rules(task.question), spent, {"router": "llm→rules (no letter)"}
        best = max(scores, key=scores.get)
        return _LETTER[best], spent, {"router": "llm", "letter": best}

    def style(self, task):
        paradigm, spent, detail = self.route(task)
        ev = TraceEvent(event="route", detail={"paradigm": paradigm, **detail})
        return PromptStyle(user_suffix=SOT_PARADIGMS[paradigm]), Usage(overhead=spent), [ev]


class TaleParams(PromptParams):
    min_budget: int = Field(16, ge=1, description="Lower clamp for the estimated budget.")
    max_budget: int = Field(1024, ge=1, description="Upper clamp for the estimated budget.")
    enforce: bool = Field(False, description="Also cut thinking at the budget (TALE-EP only states it).")

    @model_validator(mode="after")
    def _order(self):
        if self.min_budget > self.max_budget:
            raise ValueError("min_budget must be <= max_budget")
        return self


_ESTIMATE = ("Task: estimate how many output tokens a careful but concise solution to the question below needs. "
             "Reply with a single integer only.\n\nQuestion: {q}")


@register
class Tale(PromptMethod):
    name = "tale"
    summary = "TALE-EP: the model estimates a token budget for the question, then reasons under that budget."
    reference = "Han et al. 2024, Token-Budget-Aware LLM Reasoning"
    Params = TaleParams

    def estimate(self, task: Task) -> tuple[int, int, str]:
        prompt = task.backend.render_chat([{"role": "user", "content": _ESTIMATE.format(q=task.question)}])
        chunks = list(task.backend.stream(prompt, SamplingParams(max_tokens=12, temperature=0.0)))
        text = "".join(c.text for c in chunks)
        m = re.search(r"\d[\d,]*", text)
        raw = int(m.group(0).replace(",", "")) if m else self.params.max_budget
        return max(self.params.min_budget, min(self.params.max_budget, raw)), sum(c.n_tokens for c in chunks), text.strip()

    def style(self, task):
        budget, spent, raw = self.estimate(task)
        ev = TraceEvent(event="estimate_budget", detail={"budget": budget, "raw": raw[:40]})
        return PromptStyle(user_suffix=f"Let's think step by step and use less than {budget} tokens."), Usage(overhead=spent), [ev]

    def run(self, task: Task) -> Result:
        prompt = build_prompt(task)
        cap = self.params.max_thinking
        if self.params.enforce:
            budget = next((e.detail["budget"] for e in task.pre_trace if e.event == "estimate_budget"), cap)
            cap = min(cap, budget)
        out = Chain(task).run(prompt, max_thinking=cap)
        return to_result(task, self, out, prompt=prompt)
