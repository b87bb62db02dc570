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
from ..backends.continuation import Continuation, then
from ..grading import extract_answer
from ..readable import NATURAL_LEAD, lead_start
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
    Returning None after a pause resumes generation where it stopped: from the exact tokens
    so far on engines that take token ids, so a probe is a side branch that leaves the chain
    as it would have been without it.
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
    answer_lead: str = ""
    """Natural form, emulated thinking: the end of `reasoning` (as generated) that introduces
    the model's boxed answer; `to_result` moves it to the answer (see `leanthink.readable`)."""
    answer_hint: str | None = None
    """Natural form: the answer a method's probe found, used if the written answer has none."""


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
        track = self._track = _Track(prompt, prompt + reasoning_prefix, reasoning_prefix,
                                     exact=bool(getattr(self.backend, "exact_continuation", False)))
        splitter = StreamSplitter(self.family, started_inside=True)
        while True:
            answer, stop, finish = "", None, "stop"
            remaining = max(1, max_thinking - out.thinking_tokens)
            stream = self.backend.stream(track.resume(), self.params(remaining + max_answer, logprobs=logprobs))
            try:
                for chunk in stream:
                    track.pieces.append(chunk)
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
                # The stream is closed; the controller may probe (a side branch). The chain then
                # resumes from its exact tokens (`track.resume`), text held back by the splitter
                # included, so a probed chain is the chain that was never paused.
                stop = controller(ThinkState(reasoning, out.thinking_tokens, chunk, paused=True)) if controller else None
                if stop is None and out.thinking_tokens < max_thinking:
                    continue
                stop = stop or Stop("budget")  # paused on the cap's last token: no token past it
            if stop is not None and stop.inject is not None:
                out.forced_tokens += self.backend.count_tokens(stop.inject)
                out.trace.append(TraceEvent(event=stop.reason, at_token=out.thinking_tokens, detail=stop.detail))
                cut = stop.reasoning if stop.reasoning is not None else reasoning  # held-back text is dropped
                reasoning = cut + stop.inject
                track.restart(then(self._prefix(prompt, cut), stop.inject), reasoning)
                splitter = StreamSplitter(self.family, started_inside=True)
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
            if self.task.answer_format == "natural" and self.family.end_in_answer:
                out.answer_lead = reasoning[lead_start(reasoning):]
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
        if self.task.answer_format == "natural":
            # The model writes its own final answer after the end of thinking; a probe that
            # decided the exit stays overhead (it was a side branch), its answer a fallback.
            if stop is not None and stop.answer is not None:
                out.answer_hint = stop.answer.answer
            text, forced, gen = self.natural_answer(prompt, reasoning, max_answer, emit)
            out.answer_text, out.forced_tokens, out.answer_tokens = text, out.forced_tokens + forced, out.answer_tokens + gen
        elif stop is not None and stop.answer is not None:
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
        gen_text, n, _ = self.complete_boxed(then(self._prefix(prompt, reasoning.rstrip()), inject), max_tokens)
        answer_text = self.family.answer_prefix.strip() + gen_text
        return answer_text, forced, n

    def natural_answer(self, prompt: str, reasoning: str, max_tokens: int,
                       emit: Callable[[str, str], None] | None = None) -> tuple[str, int, int]:
        """End thinking and let the model write its final answer as it would (natural form).

        A reasoning model gets its end marker and answers until it stops. An instruct model
        (emulated thinking) has no marker: it gets `NATURAL_LEAD` on a new paragraph and
        completes that sentence; we stop at the end of its line. Returns (answer_text,
        forced, generated); the lead is part of the answer text and counted as forced."""
        fam = self.family
        if fam.end_in_answer:
            shown, inject, max_tokens = NATURAL_LEAD, "\n\n" + NATURAL_LEAD, min(max_tokens, NATURAL_ANSWER_TOKENS)
        else:
            shown, inject = "", f"\n{fam.think_end}\n\n"
        forced = self.backend.count_tokens(inject)
        if emit and shown:
            emit("content", shown)
        text, n, sent, cut = "", 0, 0, -1
        stream = self.backend.stream(then(self._prefix(prompt, reasoning.rstrip()), inject), self.params(max_tokens))
        try:
            for chunk in stream:
                text += chunk.text
                n += chunk.n_tokens
                if fam.end_in_answer:
                    cut = _line_end(text)
                upto = cut if cut != -1 else len(text)
                if emit and upto > sent:
                    emit("content", text[sent:upto])
                    sent = upto
                if cut != -1:
                    break
        finally:
            close = getattr(stream, "close", None)
            if close:
                close()
        if cut != -1:
            text = text[:cut]
        return (shown + text).strip() if shown else text.strip(), forced, n

    def complete_boxed(self, prefix: str, max_tokens: int, logprobs: int | None = None) -> tuple[str, int, list[float]]:
        """Generate after a `\\boxed{` prefix until the brace closes. Greedy: we want the
        model's most likely answer, not a sample. Returns (text incl. `}`, tokens, logprobs)."""
        text, n, toks = boxed_with_probs(self.backend, prefix, SamplingParams(max_tokens=max_tokens, temperature=0.0, logprobs=logprobs))
        return text, n, [lp for _, lp in toks]

    def _prefix(self, prompt: str, reasoning: str) -> str:
        """`prompt + reasoning` where `reasoning` is a prefix of this chain's reasoning: as the
        chain's exact token ids (and the rest of a cut token as forced text) on engines that take
        them, so a probe or a forced answer branches from the chain's own evaluated tokens;
        otherwise (or for text the chain did not generate) the plain text."""
        track = getattr(self, "_track", None)
        if track is not None and prompt == track.prompt:
            branch = track.prefix(reasoning)
            if branch is not None:
                return branch
        return prompt + reasoning

    def probe(self, prompt: str, reasoning: str, max_tokens: int = FORCED_ANSWER_TOKENS) -> "Probe":
        """Branch a trial answer from a reasoning prefix (DEER/Dynasor/oracle). A side branch:
        it starts from the chain's exact tokens (`_prefix`) and the chain resumes from them
        afterwards as if it had not been probed; an engine with a KV cache only evaluates the
        probe's own tokens (and re-evaluates, one by one, the chain tokens after the cut)."""
        return self.probe_prefix(self._prefix(prompt, reasoning.rstrip()), max_tokens)

    def probe_prefix(self, prefix: str, max_tokens: int = FORCED_ANSWER_TOKENS) -> "Probe":
        """`probe` from a prompt-and-reasoning prefix built by the caller (e.g. a `Continuation`)."""
        inject = self.family.force_end()
        text, n, lps = self.complete_boxed(then(prefix, inject), max_tokens, logprobs=0)
        answer = extract_answer("\\boxed{" + text) if text else None
        cost = n + self.backend.count_tokens(inject)
        mean_p = sum(math.exp(x) for x in lps) / len(lps) if lps else 0.0
        geo_p = math.exp(sum(lps) / len(lps)) if lps else 0.0
        return Probe(answer, text, cost, mean_p, geo_p, closed=boxed_closed(text) or text.endswith("}"))


NATURAL_ANSWER_TOKENS = 128
"""Cap on the sentence an instruct model writes after `NATURAL_LEAD`."""


def _line_end(text: str) -> int:
    """Where an instruct model's natural answer ends: the first newline after a closed
    `\\boxed{...}` or a finished sentence; -1 while it has not ended yet."""
    k = len(text) - len(text.lstrip())
    while (k := text.find("\n", k + 1)) != -1:
        line = text[:k].rstrip()
        i = line.rfind("\\boxed")
        if line.endswith((".", "!", "?")) or (i != -1 and "{" in line[i:] and boxed_closed(line[line.index("{", i) + 1:])):
            return k
    return -1


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
class _Track:
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
    reasoning, answer_text, thinking, answer_n = out.reasoning, out.answer_text, out.thinking_tokens, out.answer_tokens
    lead = out.answer_lead.strip()
    if lead and reasoning.endswith(lead):
        # Natural form: the sentence that introduces the boxed answer is part of the answer,
        # and so are its tokens (see `leanthink.readable.natural_split`).
        moved = min(thinking, task.backend.count_tokens(lead))
        reasoning = reasoning[: len(reasoning) - len(lead)].strip()
        answer_text = (out.answer_lead + answer_text).strip()
        thinking, answer_n = thinking - moved, answer_n + moved
    usage = Usage(
        prompt=task.backend.count_tokens(prompt),
        thinking=thinking,
        answer=answer_n,
        forced=out.forced_tokens,
        overhead=out.overhead_tokens,
    ).add(task.pre_usage)
    answer = extract_answer(answer_text)
    if answer is None:
        answer = out.answer_hint  # do not guess from reasoning: an empty answer is reported as such
    return Result(
        question=task.question,
        method=method.spec,
        params=method.param_dict(),
        model=task.backend.model_id,
        backend=task.backend.name,
        emulated_thinking=task.family.emulated,
        answer=answer,
        answer_text=answer_text,
        reasoning=reasoning,
        finish_reason=out.finish_reason,
        usage=usage,
        prompt=prompt,
        trace=list(task.pre_trace) + out.trace + list(extra_trace or []),
    )
