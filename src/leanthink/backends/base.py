"""The one interface every engine implements.

The core is `stream()`: a raw-text prompt in, token chunks out. Because the prompt is
raw text (the chat template already rendered), "continue from a prefix" is the same
call with a longer prompt, which is what early-exit methods need to force `</think>`
or to probe a trial answer. Engines that can reuse the KV cache for a shared prefix
do so transparently.
"""

from __future__ import annotations

from contextlib import closing
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol, runtime_checkable

from ..errors import CapabilityError, ConfigError


@dataclass(frozen=True)
class Capabilities:
    """What an engine can do; methods declare what they need and fail up front."""

    logprobs: bool = True
    top_logprobs: bool = True
    prefix_continuation: bool = True
    """Can continue from an arbitrary raw prefix (needs a local chat template)."""
    hidden_states: bool = False
    parallel_samples: bool = False
    """Generates n samples in one batched call (otherwise they run one after another)."""
    token_ids: bool = True
    cancellation: bool = True
    """Stopping iteration of a stream stops the engine from generating."""

    def missing(self, needed: set[str]) -> list[str]:
        return sorted(n for n in needed if not getattr(self, n))


@dataclass
class Chunk:
    """One step of a stream: usually one token."""

    text: str
    token_ids: list[int] = field(default_factory=list)
    logprob: float | None = None
    top_logprobs: dict[str, float] | None = None
    finish_reason: str | None = None
    """None while generating; then `stop` (EOS or stop string) or `length`."""
    hidden_state: Any = None
    """Last-layer hidden state of the position that produced this token (if asked for)."""

    @property
    def n_tokens(self) -> int:
        return max(1, len(self.token_ids)) if self.text or self.token_ids else 0


@dataclass
class SamplingParams:
    max_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    logprobs: int | None = None
    """None: no logprobs; 0: chosen token only; k>0: also the top-k alternatives."""
    hidden_states: bool = False

    def validate(self) -> "SamplingParams":
        if self.max_tokens <= 0:
            raise ConfigError(f"max_tokens must be a positive integer, got {self.max_tokens}")
        if self.temperature < 0:
            raise ConfigError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.logprobs is not None and not 0 <= self.logprobs <= 20:
            raise ConfigError(f"logprobs must be between 0 and 20, got {self.logprobs}")
        return self


@dataclass
class Completion:
    """A finished generation, assembled from its chunks."""

    text: str
    token_ids: list[int]
    logprobs: list[float | None]
    finish_reason: str
    n_tokens: int
    hidden_states: list[Any] = field(default_factory=list)

    @classmethod
    def from_chunks(cls, chunks: list[Chunk]) -> "Completion":
        finish = next((c.finish_reason for c in reversed(chunks) if c.finish_reason), "stop")
        return cls(
            text="".join(c.text for c in chunks),
            token_ids=[t for c in chunks for t in c.token_ids],
            logprobs=[c.logprob for c in chunks if c.text or c.token_ids],
            finish_reason=finish,
            n_tokens=sum(c.n_tokens for c in chunks),
            hidden_states=[c.hidden_state for c in chunks if c.hidden_state is not None],
        )


@runtime_checkable
class Backend(Protocol):
    """An inference engine. Implementations live one per module in this package.

    Every member below is part of the type: code that holds a backend reads them directly
    (`BaseBackend` gives the defaults), never by probing with `getattr`. Optional abilities
    are either a `Capabilities` flag that methods require up front (`hidden_states`,
    `top_logprobs`, ...) or an attribute with a neutral default (`on_text` None,
    `exact_continuation` False, ...)."""

    name: str
    """Engine name, e.g. `llama.cpp`, `openai`, `transformers`, `vllm`."""
    model_id: str
    capabilities: Capabilities
    family_override: str | None
    """The model family the user named (`#family=qwen3`); None: inferred from `model_id`."""
    exact_continuation: bool
    """`stream` takes a `Continuation` and evaluates its token ids exactly (llama.cpp, transformers)."""
    approximate_counts: bool
    """Token counts are estimates (an HTTP server without a tokenizer endpoint); may turn True
    while the backend runs, so read it after the work."""
    on_text: Callable[[str, str], None] | None
    """Who listens to a chain's text as it is produced: `Chain.run` calls it with (channel,
    delta), channel `reasoning` or `content` (a streaming wrapper sets it); None: nobody."""
    hidden_size: int | None
    """Width of the vectors `hidden_states_for` returns (with `capabilities.hidden_states`)."""
    replayed_s: float
    """Recorded engine seconds of the streams a generation cache replayed so far (0 without one)."""

    def stream(self, prompt: str, params: SamplingParams) -> Iterator[Chunk]:
        """Generate from a raw prompt. Closing the iterator early stops generation."""
        ...

    def generate(self, prompt: str, params: SamplingParams, n: int = 1) -> list[Completion]:
        """n independent samples (seeded `seed`, `seed+1`, ...)."""
        ...

    def render_chat(self, messages: list[dict[str, str]], add_generation_prompt: bool = True,
                    **template_kwargs: Any) -> str:
        """Apply the model's chat template. Raises ConfigError if the model has none or it fails.

        Special-token strings inside message content come back marked (`chat_template`), so
        that this engine's `encode`/`stream` tokenize them as text, never as control tokens.
        `template_kwargs` reach the template (`enable_thinking=False`)."""
        ...

    def encode(self, text: str) -> list[int]:
        ...

    def count_tokens(self, text: str) -> int:
        ...

    def hidden_states_for(self, text: str) -> Any:
        """Last-layer hidden states of every position of `text` (needs `capabilities.hidden_states`)."""
        ...

    def close(self) -> None:
        ...


class BaseBackend:
    """Shared behaviour: `generate` on top of `stream`, capability checks."""

    name = "base"
    model_id = ""
    capabilities = Capabilities()
    family_override: str | None = None
    exact_continuation = False
    approximate_counts = False
    on_text: Callable[[str, str], None] | None = None
    hidden_size: int | None = None
    replayed_s = 0.0

    def generate(self, prompt: str, params: SamplingParams, n: int = 1) -> list[Completion]:
        if n < 1:
            raise ConfigError(f"n must be >= 1, got {n}")
        out = []
        for i in range(n):
            p = params if params.seed is None or i == 0 else _with_seed(params, params.seed + i)
            out.append(Completion.from_chunks(list(self.stream(prompt, p))))
        return out

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text)) if text else 0

    def require(self, needed: set[str], who: str) -> None:
        missing = self.capabilities.missing(needed)
        if missing:
            raise CapabilityError(
                f"{who} needs {', '.join(missing)}, which the {self.name} backend for "
                f"'{self.model_id}' does not support. Use a backend that does (llama.cpp, "
                "transformers, or an OpenAI-compatible server in raw-completions mode)."
            )

    def hidden_states_for(self, text: str) -> Any:
        raise CapabilityError(f"the {self.name} backend for '{self.model_id}' gives no hidden states")

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def closing_stream(stream: Iterator[Chunk]) -> closing:
    """`with closing_stream(backend.stream(...)) as s:` closes the stream however the loop ends
    (a break, an exception, a decision to stop), which is what stops generation on every engine:
    our backends' streams are generators whose cleanup aborts the engine's work. A user's backend
    may return a plain iterator, which has nothing to close; it is wrapped so that it has."""
    if not hasattr(stream, "close"):
        stream = (chunk for chunk in stream)
    return closing(stream)


def close_stream(stream: Iterator[Chunk]) -> None:
    """Close a stream now (where a `with` block does not fit, e.g. across threads)."""
    with closing_stream(stream):
        pass


class BackendWrapper(BaseBackend):
    """A backend that adds one thing to another one (a generation cache, a request's token
    cap, a live-text callback, one sample's bookkeeping) and passes the rest of the
    `Backend` protocol to it. The forwarding is written out member by member, so a reader
    sees what a wrapper passes on, and a new protocol member is forwarded here, once.
    `_call` is the one hook for where the wrapped backend's calls run (an engine thread)."""

    def __init__(self, inner: BaseBackend):
        self.inner = inner
        self.name = inner.name
        self.model_id = inner.model_id
        self.capabilities = inner.capabilities
        self.family_override = inner.family_override
        self.on_text = inner.on_text

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one call of the wrapped backend; here, in the caller's thread."""
        return fn(*args, **kwargs)

    # read through: the wrapped backend may change them while it runs
    @property
    def exact_continuation(self) -> bool:  # type: ignore[override]
        return self.inner.exact_continuation

    @property
    def approximate_counts(self) -> bool:  # type: ignore[override]
        return self.inner.approximate_counts

    @property
    def hidden_size(self) -> int | None:  # type: ignore[override]
        return self.inner.hidden_size

    @property
    def replayed_s(self) -> float:  # type: ignore[override]
        return self.inner.replayed_s

    def stream(self, prompt: str, params: SamplingParams) -> Iterator[Chunk]:
        return self._call(self.inner.stream, prompt, params)

    def encode(self, text: str) -> list[int]:
        return self._call(self.inner.encode, text)

    def count_tokens(self, text: str) -> int:
        return self._call(self.inner.count_tokens, text)

    def render_chat(self, messages: list[dict[str, str]], add_generation_prompt: bool = True,
                    **template_kwargs: Any) -> str:
        return self._call(self.inner.render_chat, messages, add_generation_prompt=add_generation_prompt,
                          **template_kwargs)

    def hidden_states_for(self, text: str) -> Any:
        return self._call(self.inner.hidden_states_for, text)

    def close(self) -> None:  # the wrapped backend belongs to whoever made it
        pass


def _with_seed(params: SamplingParams, seed: int) -> SamplingParams:
    from dataclasses import replace

    return replace(params, seed=seed)


class StopMatcher:
    """Finds stop strings in streamed text without emitting text that may be the start of
    a stop string. Shared by engines that do not handle stop strings themselves."""

    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self.pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Returns (text safe to emit, stopped?)."""
        if not self.stops:
            return text, False
        buf = self.pending + text
        hits = [(buf.find(s), s) for s in self.stops if s in buf]
        if hits:
            idx, _ = min(hits)
            self.pending = ""
            return buf[:idx], True
        hold = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(buf)), 0, -1):
                if buf.endswith(s[:k]):
                    hold = max(hold, k)
                    break
        self.pending = buf[len(buf) - hold:] if hold else ""
        return buf[: len(buf) - hold], False

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out
