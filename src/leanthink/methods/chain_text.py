"""The bookkeeping of one chain's text: how streamed text splits into reasoning and answer
(`ChainText`), and which tokens produced it (`Track`), so that `Chain` can pause, resume and
branch the chain from its exact token ids."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..backends.base import Chunk
from ..backends.continuation import Continuation, then
from ..reasoning import StreamSplitter
from .chain_events import TextOut


class ChainText:
    """The chain's text so far, split into reasoning and answer as it streams in. The splitter
    holds back what may be the start of the end marker."""

    def __init__(self, family, reasoning: str):
        self.splitter = StreamSplitter(family, started_inside=True)
        self.reasoning, self.answer = reasoning, ""

    @property
    def closed(self) -> bool:
        return self.splitter.closed

    def feed(self, text: str) -> list[TextOut]:
        return self._take(self.splitter.feed(text))

    def flush(self) -> list[TextOut]:
        return self._take(self.splitter.flush())

    def _take(self, pieces) -> list[TextOut]:
        out = []
        for channel, text in pieces:
            if channel == "reasoning":
                self.reasoning += text
            else:
                self.answer += text
            out.append(TextOut(channel, text))
        return out


@dataclass
class Track:
    """Where a chain's text came from, token by token, so that it can be resumed after a pause
    and branched (probes, forced answers) from its exact token ids (see `Continuation`)."""

    prompt: str
    seg: str
    """The prompt of the current stream: `prompt`, reasoning so far, injected text."""
    seg_reasoning: str
    """The chain's reasoning text where `seg` ends."""
    exact: bool
    """The engine takes token ids (`exact_continuation`); else resumes and branches use text."""
    pieces: list[Chunk] = field(default_factory=list)
    """Chunks generated from `seg`."""

    def restart(self, seg: str, reasoning: str) -> None:
        self.seg, self.seg_reasoning, self.pieces = seg, reasoning, []

    def resume(self, pieces: list[Chunk] | None = None) -> str:
        """The prompt that continues the current stream after `pieces` (default: all of them)."""
        pieces = self.pieces if pieces is None else pieces
        text = "".join(c.text for c in pieces)
        if self.exact and pieces and all(c.token_ids for c in pieces):
            return Continuation.of(self.seg).generated([t for c in pieces for t in c.token_ids], text)
        return then(self.seg, text)

    def prefix(self, reasoning: str) -> str | None:
        """`prompt + reasoning` from the chain's own tokens: the whole tokens within `reasoning`,
        then the rest (part of a token) as text. None if `reasoning` does not extend `seg`."""
        if not reasoning.startswith(self.seg_reasoning):
            return None
        rel = reasoning[len(self.seg_reasoning):]
        k, acc = 0, 0
        for c in self.pieces:
            if acc + len(c.text) > len(rel):
                break
            acc += len(c.text)
            k += 1
        while k and not self.pieces[k - 1].text:  # a token whose bytes end in the next one's text
            k -= 1
        if rel[:acc] != "".join(c.text for c in self.pieces[:k]):
            return None
        return then(self.resume(self.pieces[:k]), rel[acc:])
