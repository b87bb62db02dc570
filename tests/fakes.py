"""A scripted backend for unit tests of control flow (never for testing engines).

Tokens are words and whitespace runs, so counts are easy to reason about in tests.
"""

from __future__ import annotations

import re
from typing import Callable, Iterator

from leanthink.backends.base import BaseBackend, Capabilities, Chunk, SamplingParams, StopMatcher

_TOKEN = re.compile(r"\s+|[^\s]+")


class ScriptedBackend(BaseBackend):
    name = "scripted"

    def __init__(self, respond: Callable[[str], str], model_id: str = "scripted-qwen2.5", caps: Capabilities | None = None):
        self.respond = respond
        self.model_id = model_id
        self.capabilities = caps or Capabilities()
        self.calls: list[str] = []
        self.generated = 0

    def encode(self, text: str) -> list[int]:
        return [hash(t) % 1000 for t in _TOKEN.findall(text)]

    def render_chat(self, messages, add_generation_prompt=True, **kw) -> str:
        body = "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in messages)
        return body + ("<assistant>" if add_generation_prompt else "")

    def stream(self, prompt: str, params: SamplingParams) -> Iterator[Chunk]:
        self.calls.append(prompt)
        text = self.respond(prompt)
        toks = _TOKEN.findall(text)
        stops = StopMatcher(params.stop)
        for i, t in enumerate(toks):
            self.generated += 1
            emit, stopped = stops.feed(t)
            last = i + 1 >= params.max_tokens
            fin = "stop" if stopped else ("length" if last else (None if i + 1 < len(toks) else "stop"))
            yield Chunk(emit, [i], -0.01 if params.logprobs is not None else None, None, fin)
            if stopped or last:
                return
