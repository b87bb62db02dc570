"""Step-level pruning: remove whole reasoning steps, keep the rest verbatim and in order.

* `spirit` (Cui et al. 2025, Stepwise Perplexity-Guided Refinement): a step matters as much
  as removing it raises the perplexity of the answer given the reasoning. Repeatedly remove
  the step whose removal raises the answer's perplexity least (rescoring after each removal,
  as the paper's iterative variant does; `iterative=false` ranks once) until the reasoning is
  at most `ratio` of its tokens.
* `asap` (Zeng et al. 2025, Pruning the Unsurprising: anchor-guided, surprisal-based pruning):
  first a coarse, anchor-guided pass drops steps that share no quantity with an anchor
  derivation (the item's reference solution when the dataset has one, e.g. GSM8K's worked
  answers, else the item's shortest correct sample), then a fine pass repeatedly drops the
  step whose *first token* is least surprising given what precedes it (a predictable step
  carries little new logic) until the target ratio.

A step is a line (a numbered item, a sentence group, an equation), a multi-line display-math
block being one step; what remains keeps its paragraph breaks. The last step (which leads
into the boxed answer) is kept unless `keep_last=false`. Answer perplexity on a small model
is a weak signal (a removed computation can even lower it): use `--rederive` so that an
example is kept only if the model still derives the answer from what is left.
"""

from __future__ import annotations

import math
import re
from typing import Literal, Optional

from pydantic import BaseModel, Field

from ..dataset import format_completion
from .base import Candidate, ChainRec, Compressor, Context, Drop, Group, no_chain_drop, pick_chains, register

_NUM = re.compile(r"\d[\d,]*(?:\.\d+)?")


def split_steps(text: str) -> tuple[list[str], list[str]]:
    """(steps, separators): every non-blank line is a step, `separators[i]` is the newline run
    before step i (`""` for the first), so `join_steps(steps, seps, all)` is the text. A display
    math block (`\\[` ... `\\]` over several lines) is one step, joined to the line before it
    when that line ends with `:` (it states what the block computes)."""
    parts = re.split(r"(\n[ \t\n]*)", text.strip())
    steps: list[str] = []
    seps: list[str] = []
    pending_sep = ""
    in_math = False
    for k, part in enumerate(parts):
        if k % 2 == 1:  # a separator
            pending_sep = "\n\n" if part.count("\n") > 1 else "\n"
            if in_math:
                steps[-1] += "\n"
            continue
        line = part.strip()
        if not line:
            continue
        opens = line.startswith("\\[") and "\\]" not in line
        if in_math:
            steps[-1] += line
            in_math = "\\]" not in line
        elif opens and steps and steps[-1].endswith(":") and pending_sep == "\n":
            steps[-1] += "\n" + line
            in_math = True
        else:
            steps.append(line)
            seps.append(pending_sep if steps[:-1] else "")
            in_math = opens
    return steps, seps


def join_steps(steps: list[str], seps: list[str], keep: list[int]) -> str:
    """The kept steps in order; between two kept steps the widest separator that stood between them."""
    out, prev = "", None
    for i in keep:
        if prev is None:
            out = steps[i]
        else:
            gap = seps[prev + 1: i + 1]
            out += "\n\n" if "\n\n" in gap else "\n"
            out += steps[i]
        prev = i
    return out


def numbers(text: str) -> set[str]:
    out = set()
    for m in _NUM.findall(text):
        v = m.replace(",", "")
        if "." in v:
            v = v.rstrip("0").rstrip(".")
        out.add(v)
    return out


def completion_body(family, prompt: str, reasoning: str, answer_text: str) -> str:
    """What the model writes after `prompt` for this (reasoning, answer): the formatted completion
    without an opening `<think>` the prompt already prefilled."""
    full = format_completion(family, reasoning, answer_text)
    opener = f"{family.think_start}\n" if family.think_start else ""
    if opener and full.startswith(opener) and prompt.rstrip().endswith(family.think_start):
        full = full[len(opener):]
    return full


def answer_nll(ctx: Context, c: ChainRec, reasoning: str) -> float:
    """Mean negative log-likelihood of the answer given the (pruned) reasoning: log perplexity.
    Only the tokens of the boxed value are scored when there is a `\\boxed{` (the formatting
    around it would otherwise dominate a short answer's perplexity), inside the whole
    completion so that they are tokenized as the model would have written them."""
    full = completion_body(ctx.family, c.prompt, reasoning, c.answer_text)
    start, end = len(full) - len(c.answer_text.strip()), None
    box = full.rfind("\\boxed{")
    if box >= start:
        start = box + len("\\boxed{")
        close = full.find("}", start)
        end = close if close > start else None
    _, lps = ctx.scorer.token_logprobs(c.prompt, full, start, end)
    return -sum(lps) / len(lps) if lps else 0.0


class StepParams(BaseModel):
    ratio: float = Field(0.6, gt=0, le=1, description="Target fraction of reasoning tokens kept, in (0, 1].")
    keep_last: bool = Field(True, description="Never remove the last step (it leads into the answer).")
    select: Literal["all", "shortest"] = Field("all", description="Compress every correct chain, or only the shortest.")


class _StepPruner(Compressor):
    needs = frozenset({"scorer"})
    always_shown = ("ratio",)

    def apply(self, group: Group, ctx: Context, *, include_cut: bool = False) -> list[Candidate | Drop]:
        chains = pick_chains(group, self.params.select, include_cut)
        if not chains:
            return [no_chain_drop(group, include_cut)]
        out: list[Candidate | Drop] = []
        for c in chains:
            steps, seps = split_steps(c.reasoning)
            if len(steps) < 2:
                out.append(Drop(c.item_id, "too_few_steps", c.seed))
                continue
            count = ctx.scorer.count_tokens
            orig = count(join_steps(steps, seps, list(range(len(steps)))))
            keep, info = self.prune(c, steps, seps, ctx, group, target=self.params.ratio * orig)
            if len(keep) == len(steps):
                out.append(Drop(c.item_id, "nothing_removable", c.seed))
                continue
            text = join_steps(steps, seps, keep)
            out.append(Candidate(source=c, reasoning=text, answer_text=c.answer_text, orig_tokens=count(c.reasoning),
                                 tokens=count(text), pruned=True,
                                 meta={"target_ratio": self.params.ratio, "steps": len(steps), "steps_kept": len(keep),
                                       **info}))
        return out

    def removable(self, keep: list[int], n: int) -> list[int]:
        return [i for i in keep if not (self.params.keep_last and i == n - 1)]

    def prune(self, c, steps, seps, ctx, group, *, target) -> tuple[list[int], dict]:  # pragma: no cover - abstract
        raise NotImplementedError


class SpiritParams(StepParams):
    iterative: bool = Field(True, description="Rescore after every removal (paper); false ranks the steps once.")


@register
class Spirit(_StepPruner):
    name = "spirit"
    summary = "Remove whole steps whose removal raises the answer's perplexity least, to a target ratio."
    reference = "Cui et al. 2025, Stepwise Perplexity-Guided Refinement for Efficient Chain-of-Thought Reasoning"
    Params = SpiritParams

    @property
    def importance(self) -> str:
        return "answer-perplexity"

    def prune(self, c, steps, seps, ctx, group, *, target):
        keep = list(range(len(steps)))
        count = ctx.scorer.count_tokens
        base = answer_nll(ctx, c, join_steps(steps, seps, keep))
        ranked: list[int] | None = None
        while count(join_steps(steps, seps, keep)) > target:
            cand = self.removable(keep, len(steps))
            if not cand or len(keep) <= 1:
                break
            if ranked is None or self.params.iterative:
                scores = {i: answer_nll(ctx, c, join_steps(steps, seps, [j for j in keep if j != i])) for i in cand}
                ranked = sorted(cand, key=lambda i: (scores[i], -i))
            victim = next((i for i in ranked if i in cand), None)
            if victim is None:
                break
            keep.remove(victim)
        final = answer_nll(ctx, c, join_steps(steps, seps, keep))
        return keep, {"answer_ppl": round(math.exp(base), 4), "answer_ppl_after": round(math.exp(final), 4)}


class AsapParams(StepParams):
    anchor: Optional[Literal["solution", "shortest"]] = Field(
        "solution", description="Anchor derivation for the coarse pass: the reference solution (else the shortest "
                                "correct sample), the shortest correct sample, or none (fine pass only).")


@register
class Asap(_StepPruner):
    name = "asap"
    summary = "Anchor-guided coarse step pruning, then first-token-surprisal step pruning to a target ratio."
    reference = "Zeng et al. 2025, Pruning the Unsurprising: Efficient Code Reasoning via First-Token Surprisal"
    Params = AsapParams

    @property
    def importance(self) -> str:
        return "first-token-surprisal"

    def prune(self, c, steps, seps, ctx, group, *, target):
        keep = list(range(len(steps)))
        info: dict = {}
        anchor = self._anchor(group)
        if anchor is not None:
            anchor_nums = numbers(anchor)
            drop = [i for i in self.removable(keep, len(steps)) if not (numbers(steps[i]) & anchor_nums)]
            if len(drop) < len(keep):
                keep = [i for i in keep if i not in drop]
            info["anchor_dropped"] = len(steps) - len(keep)
        count = ctx.scorer.count_tokens
        while count(join_steps(steps, seps, keep)) > target:
            cand = self.removable(keep, len(steps))
            if not cand or len(keep) <= 1:
                break
            first = first_token_surprisal(ctx, c.prompt, steps, seps, keep)
            by_step = dict(zip(keep, first))
            keep.remove(min(cand, key=lambda i: (by_step[i], -i)))
        return keep, info

    def _anchor(self, group: Group) -> str | None:
        mode = self.params.anchor
        if mode is None:
            return None
        if mode == "solution" and group.reference:
            return group.reference
        good = group.correct(include_cut=True)
        return min(good, key=lambda c: (c.thinking_tokens, c.seed)).reasoning if good else None


def first_token_surprisal(ctx: Context, prompt: str, steps: list[str], seps: list[str], keep: list[int]) -> list[float]:
    """Surprisal (nats) of the first token of each kept step, given everything kept before it."""
    text = join_steps(steps, seps, keep)
    pieces, lps = ctx.scorer.token_logprobs(prompt, text)
    starts, pos = [], 0
    for n, i in enumerate(keep):  # byte offset where each kept step starts in `text`
        pos = text.index(steps[i], pos)
        starts.append(len(text[:pos].encode("utf-8")))
        pos += len(steps[i])
    ends, acc = [], 0
    for p in pieces:
        acc += len(p)
        ends.append(acc)
    out = []
    for s in starts:
        idx = next((i for i, e in enumerate(ends) if e > s and pieces[i].strip()), len(pieces) - 1)
        out.append(-lps[idx] if lps else 0.0)
    return out
