"""The two baselines every method is measured against."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, Field

from ..result import Result, TraceEvent
from .base import Method, Task, register
from .engine import Chain, ChainOutput, build_prompt, to_result


class ThinkParams(BaseModel):
    max_thinking: int = Field(4096, gt=0, description="Safety cap on thinking tokens (vanilla = generous).")
    max_answer: int = Field(512, gt=0, description="Cap on tokens after the reasoning block.")


@register
class Think(Method):
    name = "think"
    kind = "baseline"
    summary = "Vanilla full reasoning: think until the model ends its reasoning, then answer."
    Params = ThinkParams
    budget_param: ClassVar[str] = "max_thinking"

    def run(self, task: Task) -> Result:
        prompt = build_prompt(task, thinking=True)
        out = Chain(task).run(prompt, max_thinking=self.params.max_thinking, max_answer=self.params.max_answer)
        return to_result(task, self, out, prompt=prompt)


class DirectParams(BaseModel):
    max_answer: int = Field(40, gt=0, description="Cap on answer tokens after the forced `\\boxed{`.")


@register
class Direct(Method):
    name = "direct"
    kind = "baseline"
    summary = "Answer without thinking: an empty reasoning block, then the answer is forced into \\boxed{}."
    Params = DirectParams

    def run(self, task: Task) -> Result:
        fam = task.family
        prompt = build_prompt(task, thinking=False)
        empty = fam.empty_thinking()
        inject = empty + fam.answer_prefix if empty else fam.answer_prefix.lstrip()
        chain = Chain(task)
        text, n, _ = chain.complete_boxed(prompt + inject, self.params.max_answer)
        out = ChainOutput(
            answer_text=fam.answer_prefix.strip() + text,
            answer_tokens=n,
            forced_tokens=task.backend.count_tokens(inject),
            finish_reason="stop",
            trace=[TraceEvent(event="no_thinking")],
        )
        return to_result(task, self, out, prompt=prompt)
