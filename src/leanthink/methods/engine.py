"""The generation loop shared by every single-chain method.

`Chain` runs one reasoning chain: it streams from the prompt, attributes each token to
the thinking or the answer phase, lets a controller stop the thinking early (budget,
early exit), and forces the answer when thinking was cut or never closed. Methods
differ only in their controller and prompt, so the accounting lives here, once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from ..backends.base import Chunk, SamplingParams
from ..grading import extract_answer
from ..reasoning import ANSWER_INSTRUCTION, StreamSplitter, boxed_closed
from ..result import Result, TraceEvent, Usage
from .base import Task

#: Tokens allowed after a forced `\boxed{` before we give up on a closing brace.
FORCED_ANSWER_TOKENS = 40


def build_prompt(task: Task, *, thinking: bool = True) -> str:
    """Rendered chat prompt, ending where the assistant starts (inside `<think>` if thinking)."""
    fam = task.family
    system = task.style.system_extra or None
    user = f"{task.question}\n\n{ANSWER_INSTRUCTION}"
    if task.style.user_suffix:
        user = f"{user}\n\n{task.style.user_suffix}"
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    kwargs = dict(fam.template_kwargs_think if thinking else fam.template_kwargs_nothink)
    rendered = task.backend.render_chat(messages, add_generation_prompt=True, **kwargs)
    if thinking:
        return rendered + fam.thinking_prefill(rendered)
    return rendered


@dataclass
class ThinkState:
    """What a controller sees after each thinking token."""

    reasoning: str
    n_tokens: int
    """Thinking tokens generated so far in this chain (across injections)."""
    chunk: Chunk
    paused: bool = False
    """True on the second call after the controller asked for `Stop("pause")`: the stream
    is closed, so the controller may now use the backend (probe) before deciding."""


@dataclass
class Stop:
    """A controller's decision to interrupt thinking.

    `exit`-like reasons end thinking: the answer is forced, or `answer` (a probe that was
    already run) is used as is. `inject` appends `text` to the reasoning and goes on.
    `pause` closes the stream and calls the controller again with `paused=True`; this is
    how probes run: never while a stream is suspended (an in-process engine has one KV
    cache, and a single-slot server would interrupt or block the suspended request).
    Returning None after a pause resumes generation from the reasoning so far.
    """

    reason: str
    reasoning: str | None = None
    """Cut the reasoning to this text (e.g. drop a trailing "Wait")."""
    answer: "Probe | None" = None
    inject: str | None = None
    detail: dict = field(default_factory=dict)


Controller = Callable[[ThinkState], "Stop | None"]


@dataclass
class ChainOutput:
    reasoning: str = ""
    answer_text: str = ""
    thinking_tokens: int = 0
    answer_tokens: int = 0
    forced_tokens: int = 0
    overhead_tokens: int = 0
    finish_reason: str = "stop"
    trace: list[TraceEvent] = field(default_factory=list)
    closed_naturally: bool = True


class Chain:
    def __init__(self, task: Task, *, temperature: float | None = None, seed: int | None = None):
        self.task = task
        self.backend = task.backend
        self.family = task.family
        self.temperature = task.temperature if temperature is None else temperature
        self.seed = task.seed if seed is None else seed

    def params(self, max_tokens: int, **kw) -> SamplingParams:
        return SamplingParams(max_tokens=max_tokens, temperature=self.temperature, seed=self.seed, **kw)

    def run(
        self,
        prompt: str,
        *,
        max_thinking: int,
        max_answer: int = 512,
        controller: Controller | None = None,
        logprobs: int | None = None,
        reasoning_prefix: str = "",
        out: ChainOutput | None = None,
        answer_on_cut: bool = True,
        on_text: Callable[[str, str], None] | None = None,
    ) -> ChainOutput:
        """Think (until the end marker, EOS, the cap, or the controller stops it), then answer.

        Token accounting is the point of this loop: every generated token lands in exactly one
        of thinking / answer; injected text is `forced`; probes are `overhead` (added by the
        controller through `out.overhead_tokens`).

        `on_text(channel, delta)` (channel `reasoning` or `content`) is called as the chain's
        text is produced, for streaming; if not given, the backend's `on_text` attribute is used
        (the proxy sets it on a per-request backend wrapper). Probes are never reported."""
        out = out or ChainOutput()
        emit = on_text or getattr(self.backend, "on_text", None)
        reasoning = reasoning_prefix
        while True:
            splitter = StreamSplitter(self.family, started_inside=True)
            answer, stop, finish = "", None, "stop"
            remaining = max(1, max_thinking - out.thinking_tokens)
            stream = self.backend.stream(prompt + reasoning, self.params(remaining + max_answer, logprobs=logprobs))
            try:
                for chunk in stream:
                    was_thinking = not splitter.closed
                    for channel, text in splitter.feed(chunk.text):
                        if channel == "reasoning":
                            reasoning += text
                        else:
                            answer += text
                        if emit:
                            emit(channel, text)
                    if was_thinking:
                        out.thinking_tokens += chunk.n_tokens
                        if not splitter.closed:
                            if controller is not None:
                                stop = controller(ThinkState(reasoning, out.thinking_tokens, chunk))
                            if stop is None and out.thinking_tokens >= max_thinking:
                                stop = Stop("budget")
                            if stop is not None:
                                break
                    else:
                        out.answer_tokens += chunk.n_tokens
                        if out.answer_tokens >= max_answer:
                            finish = "length"
                            break
                    if chunk.finish_reason:
                        finish = chunk.finish_reason
            finally:
                close = getattr(stream, "close", None)
                if close:
                    close()
            if stop is not None and stop.reason == "pause":
                # Text held back as a possible marker prefix is dropped: it is regenerated on resume.
                stop = controller(ThinkState(reasoning, out.thinking_tokens, chunk, paused=True)) if controller else None
                if stop is None:
                    continue
            if stop is not None and stop.inject is not None:
                out.forced_tokens += self.backend.count_tokens(stop.inject)
                out.trace.append(TraceEvent(event=stop.reason, at_token=out.thinking_tokens, detail=stop.detail))
                reasoning = (stop.reasoning if stop.reasoning is not None else reasoning) + stop.inject
                if emit:
                    emit("reasoning", stop.inject)
                continue
            for channel, text in splitter.flush():
                if channel == "reasoning":
                    reasoning += text
                else:
                    answer += text
                if emit:
                    emit(channel, text)
            break

        if stop is not None and stop.reasoning is not None:
            reasoning = stop.reasoning
        out.reasoning = reasoning.strip()
        if splitter.closed and stop is None:
            out.answer_text, out.finish_reason = answer.strip(), finish
            if extract_answer(out.answer_text) is None and finish == "length":
                out.trace.append(TraceEvent(event="answer_cut", at_token=out.answer_tokens))
            return out

        # Thinking was cut (cap/controller) or the model stopped without closing it: answer now.
        out.closed_naturally = False
        if not answer_on_cut:
            out.finish_reason = "cut"
            return out
        why = stop.reason if stop else ("length" if finish == "length" else "no_end_of_thinking")
        out.trace.append(TraceEvent(event="force_answer" if not (stop and stop.answer) else "exit",
                                    at_token=out.thinking_tokens, detail={"reason": why, **(stop.detail if stop else {})}))
        if stop is not None and stop.answer is not None:
            # The probe that convinced the controller is the answer: its tokens move from
            # overhead to forced (injected) + answer (generated).
            p = stop.answer
            inject_n = self.backend.count_tokens(self.family.force_end())
            out.overhead_tokens -= p.tokens
            out.forced_tokens += inject_n
            out.answer_tokens += p.tokens - inject_n
            out.answer_text = self.family.answer_prefix.strip() + p.text
        else:
            text, forced, gen = self.force_answer(prompt, reasoning)
            out.answer_text, out.forced_tokens, out.answer_tokens = text, out.forced_tokens + forced, out.answer_tokens + gen
        out.finish_reason = {"budget": "budget", None: "forced"}.get(stop.reason if stop else None, "exit")
        return out

    def force_answer(self, prompt: str, reasoning: str, *, max_tokens: int = FORCED_ANSWER_TOKENS) -> tuple[str, int, int]:
        """End thinking now and read the boxed answer. Returns (answer_text, forced, generated)."""
        inject = self.family.force_end()
        forced = self.backend.count_tokens(inject)
        gen_text, n, _ = self.complete_boxed(prompt + reasoning.rstrip() + inject, max_tokens)
        answer_text = self.family.answer_prefix.strip() + gen_text
        return answer_text, forced, n

    def complete_boxed(self, prefix: str, max_tokens: int, logprobs: int | None = None) -> tuple[str, int, list[float]]:
        """Generate after a `\\boxed{` prefix until the brace closes. Greedy: we want the
        model's most likely answer, not a sample. Returns (text incl. `}`, tokens, logprobs)."""
        text, n, toks = boxed_with_probs(self.backend, prefix, SamplingParams(max_tokens=max_tokens, temperature=0.0, logprobs=logprobs))
        return text, n, [lp for _, lp in toks]

    def probe(self, prompt: str, reasoning: str, max_tokens: int = FORCED_ANSWER_TOKENS) -> "Probe":
        """Branch a trial answer from a reasoning prefix (DEER/Dynasor/oracle). The prefix is
        shared with the main chain, so engines with a prefix cache only evaluate the probe."""
        inject = self.family.force_end()
        text, n, lps = self.complete_boxed(prompt + reasoning.rstrip() + inject, max_tokens, logprobs=0)
        answer = extract_answer("\\boxed{" + text) if text else None
        cost = n + self.backend.count_tokens(inject)
        mean_p = sum(math.exp(x) for x in lps) / len(lps) if lps else 0.0
        geo_p = math.exp(sum(lps) / len(lps)) if lps else 0.0
        return Probe(answer, text, cost, mean_p, geo_p, closed=boxed_closed(text) or text.endswith("}"))


def boxed_with_probs(backend, prefix: str, params: SamplingParams) -> tuple[str, int, list[tuple[str, float]]]:
    """Generate after a `\\boxed{` prefix until the brace closes.

    Returns (text up to and including the closing `}`, tokens generated, [(token text, logprob)])."""
    text, n, toks = "", 0, []
    stream = backend.stream(prefix, params)
    try:
        for c in stream:
            text += c.text
            n += c.n_tokens
            if c.logprob is not None:
                toks.append((c.text, c.logprob))
            if boxed_closed(text):
                break
    finally:
        close = getattr(stream, "close", None)
        if close:
            close()
    depth = 1
    for i, ch in enumerate(text):
        depth += (ch == "{") - (ch == "}")
        if depth == 0:
            return text[: i + 1], n, toks
    return text, n, toks


@dataclass
class Probe:
    answer: str | None
    text: str
    tokens: int
    """Everything the probe cost: injected + generated tokens (counts as overhead)."""
    mean_prob: float
    geo_prob: float
    closed: bool


def to_result(task: Task, method, out: ChainOutput, *, prompt: str, extra_trace=None) -> Result:
    usage = Usage(
        prompt=task.backend.count_tokens(prompt),
        thinking=out.thinking_tokens,
        answer=out.answer_tokens,
        forced=out.forced_tokens,
        overhead=out.overhead_tokens,
    ).add(task.pre_usage)
    answer = extract_answer(out.answer_text)
    if answer is None and out.reasoning:
        answer = None  # do not guess from reasoning: an empty answer is reported as such
    return Result(
        question=task.question,
        method=method.spec,
        params=method.param_dict(),
        model=task.backend.model_id,
        backend=task.backend.name,
        emulated_thinking=task.family.emulated,
        answer=answer,
        answer_text=out.answer_text,
        reasoning=out.reasoning,
        finish_reason=out.finish_reason,
        usage=usage,
        prompt=prompt,
        trace=list(task.pre_trace) + out.trace + list(extra_trace or []),
    )
