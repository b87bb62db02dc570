"""The latent-reasoning inference methods: `lightthinker`, `coconut`, `codi`, `softcot`, and
`latent-sft` (the two SFT baselines decoded with the same prompt and the same accounting).

Which checkpoint runs is the model the backend loaded: the method reads `latent.json` in
the directory the transformers backend was given (`--model DIR`), never a path from its
parameters, so on a server only the operator chooses what runs. These methods need hidden
states as inputs, custom attention and KV eviction in process: transformers only; any other
backend (llama.cpp, OpenAI-compatible servers) gets a `CapabilityError` saying so.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, Field

from ..errors import CapabilityError, ConfigError
from ..methods.base import Method, Task, register
from ..result import Result, TraceEvent, Usage
from . import METHODS
from .checkpoint import read_meta


class LatentParams(BaseModel):
    max_tokens: int = Field(96, gt=0, le=4096, description="Cap on generated tokens (steps and answer).")


def engine_of(backend):
    """The in-process transformers backend under any wrappers (e.g. bench's generation cache)."""
    while hasattr(backend, "inner"):
        backend = backend.inner
    return backend


class LatentMethod(Method):
    kind = "latent"
    Params = LatentParams
    needs = frozenset({"hidden_states"})
    budget_param: ClassVar[str | None] = "max_tokens"

    def check(self, backend) -> None:
        be = engine_of(backend)
        what = (f"method '{self.name}' runs a trained latent-reasoning checkpoint in process (continuous thoughts "
                "as inputs, custom attention, KV-cache eviction): it needs the transformers backend")
        if getattr(be, "name", "") != "transformers" or getattr(be, "model", None) is None:
            raise CapabilityError(f"{what}, not the {getattr(be, 'name', '?')} backend for '{backend.model_id}'. "
                                  f"Load the checkpoint directory written by `leanthink train latent` with "
                                  f"transformers: --model PATH/TO/CHECKPOINT")
        self.checkpoint(be)

    def checkpoint(self, be) -> tuple[Path, dict]:
        """(directory, latent.json) of the loaded model; a clear error when it is not a
        checkpoint of a recipe this method runs."""
        src = getattr(be, "source_dir", None)
        meta = read_meta(src) if src else None
        recipes = METHODS[self.name]
        if meta is None:
            raise ConfigError(f"method '{self.name}' needs a checkpoint of `leanthink train latent "
                              f"{'|'.join(recipes)}` as the model; '{be.model_id}' has no latent.json")
        if meta["recipe"] not in recipes:
            raise ConfigError(f"'{be.model_id}' is a '{meta['recipe']}' checkpoint; method '{self.name}' runs "
                              f"{', '.join(recipes)} checkpoints (use method "
                              f"'{next(m for m, r in METHODS.items() if meta['recipe'] in r)}')")
        return Path(src), meta

    def run(self, task: Task) -> Result:
        from . import infer
        from .task import parse_answer, split_reasoning

        be = engine_of(task.backend)
        ckpt, meta = self.checkpoint(be)
        with be._lock:
            r = infer.run(meta["recipe"], be.model, be.tokenizer, meta, task.question, self.params.max_tokens, ckpt)
        reasoning, answer_text = split_reasoning(r.text)
        usage = Usage(prompt=r.prompt_tokens, thinking=r.thinking_tokens, answer=r.answer_tokens,
                      forced=r.forced_tokens, overhead=r.overhead_tokens, latent=r.latent_steps)
        trace = [TraceEvent(**t) for t in r.trace]
        trace.append(TraceEvent(event="accounting", detail={"recipe": meta["recipe"], "peak_context": r.peak_context,
                                                            "forward_passes": r.forward_passes}))
        return Result(question=task.question, method=self.spec, params=self.param_dict(), model=task.backend.model_id,
                      backend=task.backend.name, answer=parse_answer(r.text), answer_text=answer_text,
                      reasoning=reasoning, finish_reason=r.finish_reason, usage=usage, trace=trace,
                      prompt=meta.get("prompt_format", "").replace("{question}", task.question),
                      peak_context=r.peak_context)


@register
class LatentSFT(LatentMethod):
    name = "latent-sft"
    summary = "Decode a nocot-sft/cot-sft checkpoint of `leanthink train latent` (the baselines, same prompt and accounting)."


@register
class LightThinkerMethod(LatentMethod):
    name = "lightthinker"
    summary = "LightThinker: after each step, write gist tokens and evict the step's text from the KV cache."
    reference = "Zhang et al. 2025, LightThinker: Thinking Step-by-Step Compression"


@register
class CoconutMethod(LatentMethod):
    name = "coconut"
    summary = "Coconut: continuous thoughts (last hidden state fed back as input) replace the reasoning steps."
    reference = "Hao et al. 2024, Training Large Language Models to Reason in a Continuous Latent Space"


@register
class CODIMethod(LatentMethod):
    name = "codi"
    summary = "CODI: continuous thoughts distilled from the model's own chain of thought (self-distillation)."
    reference = "Shen et al. 2025, CODI: Compressing Chain-of-Thought into Continuous Space via Self-Distillation"


@register
class SoftCoTMethod(LatentMethod):
    name = "softcot"
    summary = "SoftCoT: a frozen assistant's soft thoughts, projected into the frozen main model, then its chain."
    reference = "Xu et al. 2025, SoftCoT: Soft Chain-of-Thought for Efficient Reasoning with LLMs"
