"""The generation loop shared by every single-chain method.

`Chain` runs one reasoning chain: it streams from the prompt, attributes each token to
the thinking or the answer phase, lets a controller pause, inject into or end the thinking
(budget, early exit), and forces the answer when thinking was cut or never closed. Methods
differ only in their controller and prompt, so the accounting lives here, once.

Layers (as mlx-lm's `generate_step -> stream_generate -> generate`): `Chain._stream` reads
one backend stream; `Chain.think` runs the controller protocol over streams and yields
chain events (`chain_events`); `Chain.run` folds them into a `ChainOutput` and answers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Generator, Iterator

from ..backends.base import Chunk, SamplingParams, closing_stream
from ..backends.continuation import then
from ..grading import extract_answer
from ..readable import NATURAL_LEAD, lead_start
from ..reasoning import ANSWER_INSTRUCTION, boxed_closed
from ..result import Result, TraceEvent, Usage
from .base import Task
from .chain_events import (ChainEvent, Controller, Decision, Exit, Inject, Injected, Pause, Probe, TextOut,
                           ThinkingDone, ThinkState, Tokens)
from .chain_text import ChainText, Track

__all__ = ["Chain", "ChainOutput", "Controller", "Decision", "Exit", "Inject", "Pause", "Probe", "ThinkState",
           "boxed_with_probs", "build_prompt", "to_result"]

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
class ChainOutput:
    """What one chain produced and what it cost, phase by phase."""

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

    def add(self, event: ChainEvent) -> None:
        """Fold one chain event into the counts and the trace (text is the caller's)."""
        if isinstance(event, Tokens):
            if event.phase == "thinking":
                self.thinking_tokens += event.n
            else:
                self.answer_tokens += event.n
        elif isinstance(event, Injected):
            self.forced_tokens += event.tokens
            self.trace.append(TraceEvent(event=event.decision.event, at_token=event.at_token, detail=event.decision.detail))


@dataclass
class _Limits:
    """Caps of one chain and the tokens counted so far (they start from the caller's counts)."""

    max_thinking: int
    max_answer: int
    thinking: int = 0
    answer: int = 0


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
        """Think (until the end marker, EOS, the cap, or the controller ends it), then answer.

        Token accounting is the point: every generated token lands in exactly one of thinking /
        answer; injected text is `forced`; probes are `overhead` (added by the controller
        through `out.overhead_tokens`). Counts add to those of `out` if given.

        `on_text(channel, delta)` (channel `reasoning` or `content`) is called as the chain's
        text is produced, for streaming; if not given, the backend's `on_text` attribute is used
        (the proxy sets it on a per-request backend wrapper). Probes are never reported."""
        out = out or ChainOutput()
        emit = on_text or self.backend.on_text
        events = self.think(prompt, max_thinking=max_thinking, max_answer=max_answer, controller=controller,
                            logprobs=logprobs, reasoning_prefix=reasoning_prefix,
                            counted=(out.thinking_tokens, out.answer_tokens))
        for event in events:
            if isinstance(event, TextOut):
                if emit:
                    emit(event.channel, event.text)
            elif isinstance(event, ThinkingDone):
                done = event
            else:
                out.add(event)
        return self._conclude(prompt, done, out, max_answer=max_answer, answer_on_cut=answer_on_cut, emit=emit)

    def think(self, prompt: str, *, max_thinking: int, max_answer: int = 512, controller: Controller | None = None,
              logprobs: int | None = None, reasoning_prefix: str = "",
              counted: tuple[int, int] = (0, 0)) -> Iterator[ChainEvent]:
        """The thinking phase as events (the answer's own tokens too, if the model closes its
        reasoning); ends with one `ThinkingDone`. Runs the controller protocol: a `Pause`
        closes the stream before the controller is asked again, an `Inject` restarts the
        stream after the injected text, an `Exit` (or the cap) ends thinking. `counted`:
        (thinking, answer) tokens of earlier runs of this chain, which count toward the caps."""
        limits = _Limits(max_thinking, max_answer, *counted)
        text = ChainText(self.family, reasoning_prefix)
        track = self._track = Track(prompt, prompt + reasoning_prefix, reasoning_prefix,
                                     exact=self.backend.exact_continuation)
        while True:
            decision, finish, last = yield from self._stream(track, text, limits, controller, logprobs)
            if isinstance(decision, Pause):
                # The stream is closed; the controller may probe (a side branch). The chain then
                # resumes from its exact tokens (`track.resume`), text held back by the splitter
                # included, so a probed chain is the chain that was never paused.
                decision = controller(ThinkState(text.reasoning, limits.thinking, last, paused=True))
                if isinstance(decision, Pause):
                    raise RuntimeError("a controller returned Pause() while paused")
                if decision is None and limits.thinking < limits.max_thinking:
                    continue
                decision = decision or Exit("budget")  # paused on the cap's last token: no token past it
            if isinstance(decision, Inject):
                yield Injected(decision, limits.thinking, self.backend.count_tokens(decision.text))
                cut = text.reasoning  # text held back by the splitter is dropped
                text = ChainText(self.family, cut + decision.text)
                track.restart(then(self._prefix(prompt, cut), decision.text), text.reasoning)
                yield TextOut("reasoning", decision.text)
                continue
            yield from text.flush()
            reasoning = decision.reasoning if decision is not None and decision.reasoning is not None else text.reasoning
            yield ThinkingDone(reasoning, text.answer, finish, decision, text.closed)
            return

    def _stream(self, track: Track, text: ChainText, limits: _Limits, controller: Controller | None,
                logprobs: int | None) -> Generator[ChainEvent, None, tuple[Decision | None, str, Chunk | None]]:
        """One backend stream, from where the chain stands, until the model closes its reasoning
        and answers, the stream ends, or a decision interrupts thinking. Yields text and token
        events; returns (decision, finish reason, last chunk)."""
        decision, finish, chunk = None, "stop", None
        remaining = max(1, limits.max_thinking - limits.thinking)
        with closing_stream(self.backend.stream(track.resume(), self.params(remaining + limits.max_answer, logprobs=logprobs))) as stream:
            for chunk in stream:
                track.pieces.append(chunk)
                was_thinking = not text.closed
                yield from text.feed(chunk.text)
                if was_thinking:
                    limits.thinking += chunk.n_tokens
                    yield Tokens("thinking", chunk.n_tokens)
                    if not text.closed:
                        decision = controller(ThinkState(text.reasoning, limits.thinking, chunk)) if controller else None
                        if decision is None and limits.thinking >= limits.max_thinking:
                            decision = Exit("budget")
                        if decision is not None:
                            break
                else:
                    limits.answer += chunk.n_tokens
                    yield Tokens("answer", chunk.n_tokens)
                    if limits.answer >= limits.max_answer:
                        finish = "length"
                        break
                if chunk.finish_reason:
                    finish = chunk.finish_reason
        return decision, finish, chunk

    def _conclude(self, prompt: str, done: ThinkingDone, out: ChainOutput, *, max_answer: int,
                  answer_on_cut: bool, emit: Callable[[str, str], None] | None) -> ChainOutput:
        """The answer: the model's own if it closed its reasoning, else forced (or none if
        `answer_on_cut` is off: the caller goes on, e.g. InftyThink's next segment)."""
        out.reasoning = done.reasoning.strip()
        if done.closed and done.decision is None:
            out.answer_text, out.finish_reason = done.answer.strip(), done.finish
            if self.task.answer_format == "natural" and self.family.end_in_answer:
                out.answer_lead = done.reasoning[lead_start(done.reasoning):]
            if extract_answer(out.answer_text) is None and done.finish == "length":
                out.trace.append(TraceEvent(event="answer_cut", at_token=out.answer_tokens))
            return out
        # Thinking was cut (cap/controller) or the model stopped without closing it: answer now.
        out.closed_naturally = False
        if not answer_on_cut:
            out.finish_reason = "cut"
            return out
        d = done.decision
        why = d.reason if d else ("length" if done.finish == "length" else "no_end_of_thinking")
        out.trace.append(TraceEvent(event="exit" if d and d.answer else "force_answer",
                                    at_token=out.thinking_tokens, detail={"reason": why, **(d.detail if d else {})}))
        self._answer_after_cut(prompt, done.reasoning, d, out, max_answer, emit)
        out.finish_reason = "forced" if d is None else ("budget" if d.reason == "budget" else "exit")
        return out

    def _answer_after_cut(self, prompt: str, reasoning: str, d: Exit | None, out: ChainOutput, max_answer: int,
                          emit: Callable[[str, str], None] | None) -> None:
        """Answer after thinking was cut: in natural form the model writes it; else the probe
        that decided the exit is the answer, or the answer is forced (boxed)."""
        if self.task.answer_format == "natural":
            # The model writes its own final answer after the end of thinking; a probe that
            # decided the exit stays overhead (it was a side branch), its answer a fallback.
            if d is not None and d.answer is not None:
                out.answer_hint = d.answer.answer
            text, forced, gen = self.natural_answer(prompt, reasoning, max_answer, emit)
        elif d is not None and d.answer is not None:
            # The probe that convinced the controller is the answer: its tokens move from
            # overhead to forced (injected) + answer (generated).
            p = d.answer
            inject_n = self.backend.count_tokens(self.family.force_end())
            out.overhead_tokens -= p.tokens
            out.forced_tokens += inject_n
            out.answer_tokens += p.tokens - inject_n
            out.answer_text = self.family.answer_prefix.strip() + p.text
            return
        else:
            text, forced, gen = self.force_answer(prompt, reasoning)
        out.answer_text, out.forced_tokens, out.answer_tokens = text, out.forced_tokens + forced, out.answer_tokens + gen

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
        with closing_stream(self.backend.stream(then(self._prefix(prompt, reasoning.rstrip()), inject), self.params(max_tokens))) as stream:
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
    with closing_stream(backend.stream(prefix, params)) as stream:
        for c in stream:
            text += c.text
            n += c.n_tokens
            if c.logprob is not None:
                toks.append((c.text, c.logprob))
            if boxed_closed(text):
                break
    depth = 1
    for i, ch in enumerate(text):
        depth += (ch == "{") - (ch == "}")
        if depth == 0:
            return text[: i + 1], n, toks
    return text, n, toks


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
