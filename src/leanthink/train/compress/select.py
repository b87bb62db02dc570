"""`shortest`: self-training on the model's own shortest correct chain (no text is changed).

Munkhbat et al. 2025 (Self-Training Elicits Concise Reasoning) fine-tune on the shortest
correct of k samples. With `weights=o1pruner` each example carries O1-Pruner's
length-harmonizing weight (Luo et al. 2025):

    w = (L̄ - L) / L + alpha * (correct - Ā)

L̄ and Ā are the item's mean thinking length and accuracy over its k samples (the reference
model's behaviour), L and correct the chosen chain's. Weighted SFT needs w >= 0, so w is
clipped at `min_weight`; with `normalize=true` weights are rescaled to mean 1 over the
dataset so that the loss keeps its scale. `pick=all` emits every correct chain with its own
weight (shorter ones weigh more), which is where the weights matter most.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from .base import Candidate, Compressor, Context, Drop, Group, no_chain_drop, register


class ShortestParams(BaseModel):
    weights: Literal["none", "o1pruner"] = Field("none", description="Per-example weights: none (1.0) or O1-Pruner's.")
    alpha: float = Field(2.0, ge=0, description="O1-Pruner's accuracy coefficient.")
    pick: Literal["shortest", "all"] = Field("shortest", description="The shortest correct chain, or every correct one.")
    min_weight: float = Field(0.0, ge=0, description="Lower clip of O1-Pruner weights (weighted SFT needs >= 0).")
    normalize: bool = Field(True, description="Rescale O1-Pruner weights to mean 1 over the dataset.")


def o1pruner_weight(length: int, correct: bool, mean_length: float, mean_acc: float, alpha: float) -> float:
    """O1-Pruner's length-harmonizing reward of one sample (unclipped)."""
    if length <= 0:
        raise ValueError("chain length must be positive")
    return (mean_length - length) / length + alpha * (float(correct) - mean_acc)


@register
class Shortest(Compressor):
    name = "shortest"
    summary = "Shortest correct of k samples (self-training); optional O1-Pruner length-harmonizing weights."
    reference = "Munkhbat et al. 2025, Self-Training Elicits Concise Reasoning; Luo et al. 2025, O1-Pruner"
    Params = ShortestParams

    def apply(self, group: Group, ctx: Context, *, include_cut: bool = False) -> list[Candidate | Drop]:
        good = sorted(group.correct(include_cut), key=lambda c: (c.thinking_tokens, c.seed))
        if not good:
            return [no_chain_drop(group, include_cut)]
        chosen = good if self.params.pick == "all" else good[:1]
        lengths = [c.thinking_tokens for c in group.chains]
        mean_len = sum(lengths) / len(lengths)
        out: list[Candidate | Drop] = []
        for c in chosen:
            weight, meta = 1.0, {"k": len(group.chains), "item_accuracy": round(group.accuracy, 4),
                                 "mean_tokens_k": round(mean_len, 1)}
            if self.params.weights == "o1pruner":
                raw = o1pruner_weight(max(1, c.thinking_tokens), c.correct, mean_len, group.accuracy, self.params.alpha)
                weight = max(self.params.min_weight, raw)
                meta["o1pruner_raw"] = round(raw, 4)
            # orig_tokens: what the base model spends on this item on average (the mean of its k samples).
            out.append(Candidate(source=c, reasoning=c.reasoning, answer_text=c.answer_text,
                                 orig_tokens=max(1, round(mean_len)), tokens=c.thinking_tokens, weight=weight,
                                 meta=meta))
        return out

    def finalize(self, examples: list[dict]) -> list[dict]:
        if self.params.weights != "o1pruner" or not self.params.normalize or not examples:
            return examples
        mean = sum(e["weight"] for e in examples) / len(examples)
        if mean <= 0:
            return examples
        for e in examples:
            e["weight"] = round(e["weight"] / mean, 6)
        return examples
