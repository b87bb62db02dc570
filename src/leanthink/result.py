"""The record every method returns, and the CLI/API/bench/server all consume."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, computed_field


class Usage(BaseModel):
    """Tokens by phase. `total` is everything the method made the engine generate or
    inject on the output side, so two methods can be compared honestly."""

    prompt: int = 0
    """Tokens of the (first) prompt; reported, not part of `total`."""
    thinking: int = 0
    """Generated tokens inside the reasoning block the user sees."""
    answer: int = 0
    """Generated tokens after the reasoning block."""
    forced: int = 0
    """Tokens the method injected into the output (e.g. `</think>` + answer prefix, "Wait")."""
    overhead: int = 0
    """Tokens spent that the user never sees: probes, discarded samples, estimator calls."""
    latent: int = 0
    """Continuous thoughts (latent reasoning: Coconut, CODI, SoftCoT): inputs that are vectors,
    not tokens. Each costs a forward position but no token, so it is not in `total`; it is
    reported next to it (with `Result.peak_context` and the wall time) so that a method
    cannot look cheap by hiding compute."""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total(self) -> int:
        return self.thinking + self.answer + self.forced + self.overhead

    def add(self, other: "Usage") -> "Usage":
        return Usage(
            prompt=self.prompt + other.prompt,
            thinking=self.thinking + other.thinking,
            answer=self.answer + other.answer,
            forced=self.forced + other.forced,
            overhead=self.overhead + other.overhead,
            latent=self.latent + other.latent,
        )


class TraceEvent(BaseModel):
    """One decision a method took, e.g. `exit` at token 312 with confidence 0.97."""

    event: str
    at_token: int | None = None
    detail: dict[str, Any] = Field(default_factory=dict)

    def describe(self) -> str:
        where = f" @ token {self.at_token}" if self.at_token is not None else ""
        extra = ", ".join(f"{k}={_fmt(v)}" for k, v in self.detail.items())
        return f"{self.event}{where}{': ' + extra if extra else ''}"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


class Result(BaseModel):
    question: str
    method: str
    """Canonical method spec, e.g. `think` or `budget(max_thinking=256)`."""
    params: dict[str, Any] = Field(default_factory=dict)
    model: str = ""
    backend: str = ""
    emulated_thinking: bool = False
    """True when the model is not a reasoning model and thinking was asked for by prompt."""
    answer: str | None = None
    """Extracted final answer (e.g. `42`, `\\frac{1}{2}`), None if none was found."""
    answer_text: str = ""
    """Raw text after the reasoning block."""
    reasoning: str = ""
    finish_reason: str = "stop"
    """`stop` (model ended), `budget` (a cap fired and the answer was forced), `length`, `exit` (early exit)."""
    usage: Usage = Field(default_factory=Usage)
    latency_s: float = 0.0
    trace: list[TraceEvent] = Field(default_factory=list)
    prompt: str = ""
    """The raw prompt the chain started from (chat template applied), for replay and oracle probing."""
    samples: int = 1
    """Number of sampled chains the method ran (1 for single-chain methods)."""
    peak_context: int | None = None
    """Most positions held in the KV cache at once (prompt, tokens, thoughts), where the method
    measures it (the latent methods); None elsewhere (`eval.views` then estimates it)."""

    @property
    def content(self) -> str:
        """The answer as a person reads it: `answer_text` with `\\boxed{}` unwrapped and math
        delimiters removed (what `leanthink serve` returns as `content` by default)."""
        from .readable import plain

        return plain(self.answer_text)
