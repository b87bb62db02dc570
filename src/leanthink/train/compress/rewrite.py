"""`rewrite`: a model rewrites each correct chain concisely (C3oT / LiteCoT style).

C3oT (Kang et al. 2024) has a strong model compress the chain while keeping the key
information; LiteCoT (Wu et al. 2025) makes the target length depend on difficulty. Here the
difficulty of an item is what the collection measured: the fraction of its k samples that
were correct. Easy items (mostly solved) get the tightest instruction, hard ones keep every
step. The rewriter is any leanthink backend (default: the model that produced the chains),
decoding greedily; its output is split into reasoning and answer the family's way and graded
again by the runner (a rewrite that changes the answer is dropped as `wrong_answer`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from ...backends.base import SamplingParams
from ...reasoning import split_reasoning
from .base import Candidate, Compressor, Context, Drop, Group, no_chain_drop, pick_chains, register

REWRITE_PROMPT = (
    "Rewrite the solution below so that it is as short as possible while keeping every calculation needed to "
    "reach the answer. {length} Do not add new reasoning. End with the final answer in \\boxed{{}}: "
    "\\boxed{{{answer}}}.\n\nProblem:\n{question}\n\nSolution:\n{solution}"
)
LEVELS = {
    "easy": "Use at most three short sentences.",
    "medium": "Write one short line per step, with no explanations around the equations.",
    "hard": "Keep every step, but remove repetition, restatements and filler words.",
}


def difficulty(accuracy: float) -> str:
    """LiteCoT-style difficulty from the item's sample accuracy."""
    return "easy" if accuracy >= 0.75 else "medium" if accuracy >= 0.4 else "hard"


class RewriteParams(BaseModel):
    difficulty_aware: bool = Field(True, description="Length instruction by item difficulty (else always `medium`).")
    max_tokens: int = Field(384, gt=0, le=4096, description="Cap on the rewrite's tokens.")
    require_shorter: bool = Field(True, description="Drop rewrites that are not shorter than the original reasoning.")
    select: Literal["all", "shortest"] = Field("shortest", description="Rewrite every correct chain, or the shortest.")


@register
class Rewrite(Compressor):
    name = "rewrite"
    summary = "A model rewrites each correct chain concisely; difficulty-aware length (C3oT / LiteCoT)."
    reference = "Kang et al. 2024, C3oT; Wu et al. 2025, LiteCoT (Concise Reasoning, Big Gains)"
    Params = RewriteParams
    needs = frozenset({"backend"})

    @property
    def importance(self) -> str:
        return "rewrite"

    def prompt(self, group: Group, chain, family) -> tuple[str, str]:
        level = difficulty(group.accuracy) if self.params.difficulty_aware else "medium"
        solution = chain.reasoning.strip() + "\n" + chain.answer_text.strip()
        return REWRITE_PROMPT.format(length=LEVELS[level], answer=chain.answer or group.gold,
                                     question=group.question, solution=solution), level

    def apply(self, group: Group, ctx: Context, *, include_cut: bool = False) -> list[Candidate | Drop]:
        chains = pick_chains(group, self.params.select, include_cut)
        if not chains:
            return [no_chain_drop(group, include_cut)]
        be = ctx.backend
        out: list[Candidate | Drop] = []
        for c in chains:
            text, level = self.prompt(group, c, ctx.family)
            prompt = be.render_chat([{"role": "user", "content": text}], add_generation_prompt=True)
            gen = be.generate(prompt, SamplingParams(max_tokens=self.params.max_tokens, temperature=0.0))[0].text
            reasoning, answer_text, closed = split_reasoning(gen, ctx.family, started_inside=True)
            if ctx.family.native_thinking and not closed:  # a native model may answer without a think block
                reasoning, answer_text = "", gen.strip()
            if not answer_text:
                out.append(Drop(c.item_id, "rewrite_no_answer", c.seed))
                continue
            orig, new = be.count_tokens(c.reasoning), be.count_tokens(reasoning)
            if self.params.require_shorter and new >= orig:
                out.append(Drop(c.item_id, "rewrite_not_shorter", c.seed))
                continue
            out.append(Candidate(source=c, reasoning=reasoning, answer_text=answer_text, orig_tokens=orig, tokens=new,
                                 meta={"difficulty": level, "rewriter": be.model_id}))
        return out
