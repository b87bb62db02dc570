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

    def __init__(self, respond: Callable[[str], str], model_id: str = "scripted-qwen2.5", caps: Capabilities | None = None,
                 *, logprob: float | Callable[[str, int, str], float] = -0.01,
                 top_logprobs: Callable[[str, int, str], dict[str, float] | None] | None = None):
        """`logprob` / `top_logprobs`: what a chunk reports when logprobs are asked for, as a
        constant or as a function of (prompt, index of the token, token text); scripting them
        scripts confidence-based decisions (DEER's exit, route's escalation, spec-reason's judge)."""
        self.respond = respond
        self.model_id = model_id
        self.capabilities = caps or Capabilities()
        self.calls: list[str] = []
        self.generated = 0
        self.logprob = logprob
        self.top_logprobs = top_logprobs

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
            lp = top = None
            if params.logprobs is not None:
                lp = self.logprob(prompt, i, t) if callable(self.logprob) else self.logprob
                top = self.top_logprobs(prompt, i, t) if self.top_logprobs else None
            yield Chunk(emit, [i], lp, top, fin)
            if stopped or last:
                return


class Script:
    """A respond function for `ScriptedBackend` that behaves like a model writing one chain.

    A prompt that asks for a boxed answer (ends in `\\boxed{`: a probe or a forced answer)
    gets `probe` (a string or a function of the prompt); a prompt matched by a rule
    (`(substring, reply)`) gets the reply; any other prompt is the chain's prompt plus some
    of the chain (a resume after a pause or an injection) and gets the rest of `chain`.
    Text listed in `ignore` (an injected hint) is skipped when matching, as if the model
    went on regardless. Every probe prompt is recorded in `probes`."""

    def __init__(self, chain: str, *, probe: str | Callable[[str], str] = "4}", rules: tuple = (),
                 ignore: tuple[str, ...] = ()):
        self.chain, self.probe, self.rules, self.ignore = chain, probe, rules, ignore
        self.probes: list[str] = []

    def __call__(self, prompt: str) -> str:
        prompt = str(prompt)
        for needle, reply in self.rules:
            if needle in prompt:
                return reply
        if prompt.rstrip().endswith("\\boxed{"):
            self.probes.append(prompt)
            return self.probe(prompt) if callable(self.probe) else self.probe
        done = generated(prompt)
        for text in self.ignore:
            done = done.replace(text, "")
        if not self.chain.startswith(done):
            raise AssertionError(f"not a prefix of the scripted chain: {done!r}")
        return self.chain[len(done):]


def generated(prompt: str) -> str:
    """The assistant's text in a prompt that continues a chain (after `<assistant>` and, for a
    native reasoning family, `<think>\\n`)."""
    return str(prompt).split("<assistant>", 1)[-1].removeprefix("<think>\n")
