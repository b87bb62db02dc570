"""The vocabulary of one reasoning chain: what a controller sees, what it may decide, and
the events `Chain.think` streams.

A controller is called after each thinking token with a `ThinkState` and returns None (go
on) or one of three decisions, each with its own meaning:

  `Pause()`   close the stream, then call me again with `paused=True`: only then may I use
              the backend (run a probe). Returning None after a pause resumes the chain
              where it stopped, from its exact tokens, as if it had never been paused.
  `Inject`    append this text to the reasoning (counted as forced) and go on thinking.
  `Exit`      end thinking now: the answer is forced, or `answer` (a probe already run) is used.

Why pausing is a decision of its own: a probe must never run while the chain's stream is
suspended (an in-process engine has one KV cache; a single-slot server would interrupt or
block the suspended request).

The events follow mlx-lm's layering (`generate_step -> stream_generate -> generate`):
`Chain.think` yields them; `Chain.run` folds them into a `ChainOutput`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal, Union

from ..backends.base import Chunk

# --------------------------------------------------------------------------- controller side


@dataclass
class ThinkState:
    """What a controller sees after each thinking token."""

    reasoning: str
    n_tokens: int
    """Thinking tokens generated so far in this chain (across injections)."""
    chunk: Chunk
    paused: bool = False
    """True on the call that follows a `Pause()`: the stream is closed, so the controller may
    now use the backend (probe) before deciding."""


@dataclass
class Probe:
    """A trial answer branched from a reasoning prefix (`Chain.probe`)."""

    answer: str | None
    text: str
    tokens: int
    """Everything the probe cost: injected + generated tokens (counts as overhead)."""
    mean_prob: float
    geo_prob: float
    closed: bool


@dataclass(frozen=True)
class Pause:
    """Close the stream and call the controller again with `paused=True` (see the module doc)."""


@dataclass
class Inject:
    """Append `text` to the reasoning and go on thinking. Its tokens are `forced`; the trace
    gets an event named `event` at the current thinking token."""

    text: str
    event: str = "inject"
    detail: dict = field(default_factory=dict)


@dataclass
class Exit:
    """End thinking now.

    `reason` goes to the trace (`budget` is the engine's own cap and gives finish reason
    `budget`; any other reason gives `exit`). `reasoning` cuts the reasoning to this text (e.g.
    before a trailing "Wait"). `answer`: the probe that decided the exit is the answer (its
    tokens move from overhead to forced + answer); without one the answer is forced."""

    reason: str = "exit"
    reasoning: str | None = None
    answer: Probe | None = None
    detail: dict = field(default_factory=dict)


Decision = Union[Pause, Inject, Exit]
Controller = Callable[[ThinkState], "Decision | None"]

# --------------------------------------------------------------------------- chain events


@dataclass
class TextOut:
    """Text the chain produced, for streaming: `channel` is `reasoning` or `content`."""

    channel: Literal["reasoning", "content"]
    text: str


@dataclass
class Tokens:
    """`n` generated tokens, attributed to the thinking or the answer phase."""

    phase: Literal["thinking", "answer"]
    n: int


@dataclass
class Injected:
    """An `Inject` decision took effect after `at_token` thinking tokens; it cost `tokens`."""

    decision: Inject
    at_token: int
    tokens: int


@dataclass
class ThinkingDone:
    """The last event: how the thinking phase ended.

    `closed`: the model closed its reasoning itself (its `answer` was streamed too);
    `decision`: the `Exit` that ended it (a controller's or the cap's), or None;
    `finish`: the finish reason of the last stream (`stop`, `length`)."""

    reasoning: str
    answer: str
    finish: str
    decision: Exit | None
    closed: bool


ChainEvent = Union[TextOut, Tokens, Injected, ThinkingDone]
