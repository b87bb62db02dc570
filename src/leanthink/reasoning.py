"""How each model family thinks, and how to split reasoning from the answer.

Reasoning models put their chain of thought between markers (`<think>`/`</think>` for
DeepSeek-R1, Qwen3, QwQ). Methods need to know those markers to suppress thinking, to
force its end, and to probe a trial answer. Instruct models do not think at all; for
them we *emulate* thinking: the model's own step-by-step text, up to the point where it
states its boxed answer, is treated as the reasoning block. The engine splits at the first
`\\boxed{` (the marker methods act on, and the grading form's split); what a person reads
(the natural answer format) starts one sentence earlier, with the sentence that gives the
answer (`leanthink.readable`). Forcing the end of thinking is then appending the answer prefix
(or, in the natural form, a lead the model completes in its own words). (Asking a small instruct model to write `<think>` tags
itself cost Qwen2.5-Coder-1.5B most of its GSM8K accuracy in our trials, so we do not.)
Every thinking-control method works the same way on both, and emulated results say so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ANSWER_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
"""Appended to every question: the DeepSeek-R1 evaluation prompt convention."""


@dataclass(frozen=True)
class Family:
    name: str
    patterns: tuple[str, ...]
    """Lower-case substrings of a model id/path that select this family."""
    native_thinking: bool
    think_start: str = "<think>"
    think_end: str = "</think>"
    answer_prefix: str = "\n\n**Final Answer**\n\\boxed{"
    """What follows `think_end` when a method forces the answer."""
    end_in_answer: bool = False
    """The end marker belongs to the answer (emulated thinking ends at the first `\\boxed{`)."""
    template_kwargs_think: tuple[tuple[str, object], ...] = ()
    template_kwargs_nothink: tuple[tuple[str, object], ...] = ()

    @property
    def emulated(self) -> bool:
        return not self.native_thinking

    def thinking_prefill(self, rendered_prompt: str) -> str:
        """Text to append after the rendered prompt so the model starts inside the thinking block.

        Templates of newer R1 distills already end with `<think>\\n`; do not add it twice."""
        if not self.think_start:
            return ""
        if rendered_prompt.rstrip().endswith(self.think_start):
            return "" if rendered_prompt.endswith("\n") else "\n"
        return self.think_start + "\n"

    def empty_thinking(self) -> str:
        """A closed, empty thinking block (NoThinking / Qwen3's no-think form)."""
        if not self.native_thinking:
            return ""
        return f"{self.think_start}\n\n{self.think_end}"

    def force_end(self) -> str:
        """What to append to an unfinished reasoning prefix to make the model answer now."""
        if self.end_in_answer:
            return self.answer_prefix
        return f"\n{self.think_end}{self.answer_prefix}"


FAMILIES: list[Family] = [
    Family("deepseek-r1", ("deepseek-r1", "r1-distill", "deepseek-reasoner", "openthinker", "skywork-or1"), True),
    Family(
        "qwen3",
        ("qwen3",),
        True,
        template_kwargs_think=(("enable_thinking", True),),
        template_kwargs_nothink=(("enable_thinking", False),),
    ),
    Family("qwq", ("qwq",), True),
    Family("qwen2.5", ("qwen2.5", "qwen2-", "qwen2_", "qwen-2"), False, "", "\\boxed{", end_in_answer=True),
    Family("smollm2", ("smollm",), False, "", "\\boxed{", end_in_answer=True),
    Family("generic-instruct", (), False, "", "\\boxed{", end_in_answer=True),
]
_BY_NAME = {f.name: f for f in FAMILIES}


def family_for(model_id: str, override: str | None = None) -> Family:
    """Pick the family by explicit name, else by the model id, else generic (emulated)."""
    from .errors import ConfigError

    if override:
        if override not in _BY_NAME:
            raise ConfigError(f"unknown model family '{override}'; known: {', '.join(_BY_NAME)}")
        return _BY_NAME[override]
    low = model_id.lower()
    for fam in FAMILIES:
        if any(p in low for p in fam.patterns):
            return fam
    return _BY_NAME["generic-instruct"]


def split_reasoning(text: str, family: Family, started_inside: bool = True) -> tuple[str, str, bool]:
    """Split generated text into (reasoning, answer_text, closed?).

    `started_inside`: the prompt was prefilled with the opening marker, so the text starts
    inside the reasoning block. A model may also open the block itself.
    """
    body = text
    if not family.think_start:
        started_inside = True
    if not started_inside:
        start = body.find(family.think_start)
        if start == -1:
            return "", text.strip(), True
        body = body[start + len(family.think_start):]
    else:
        if family.think_start and body.lstrip().startswith(family.think_start):
            body = body.lstrip().removeprefix(family.think_start)
    end = body.find(family.think_end)
    if end == -1:
        return body.strip(), "", False
    after = end if family.end_in_answer else end + len(family.think_end)
    return body[:end].strip(), body[after:].strip(), True


class StreamSplitter:
    """Incremental version of `split_reasoning` for streamed deltas.

    Holds back text that might be the beginning of a marker split across chunks, so a
    client never sees half a `</think>`.
    """

    def __init__(self, family: Family, started_inside: bool = True):
        self.family = family
        self.in_reasoning = started_inside
        self.closed = False
        self._buf = ""
        self._at_content_start = False

    def feed(self, delta: str) -> list[tuple[str, str]]:
        """Returns [(channel, text)] with channel `reasoning` or `content`."""
        self._buf += delta
        out: list[tuple[str, str]] = []
        while self._buf:
            marker = self.family.think_end if self.in_reasoning else self.family.think_start
            if not marker:  # emulated thinking has no opening marker: all text before the end is reasoning
                self.in_reasoning = True
                marker = self.family.think_end
            if self.closed:
                if self._at_content_start:  # drop the blank lines right after the end marker
                    self._buf = self._buf.lstrip("\n")
                    if not self._buf:
                        break
                    self._at_content_start = False
                out.append(("content", self._buf))
                self._buf = ""
                break
            idx = self._buf.find(marker)
            if idx != -1:
                if self._buf[:idx]:
                    out.append(("reasoning" if self.in_reasoning else "content", self._buf[:idx]))
                keep_marker = self.in_reasoning and self.family.end_in_answer
                self._buf = self._buf[idx if keep_marker else idx + len(marker):]
                if self.in_reasoning:
                    self.in_reasoning, self.closed = False, True
                    self._at_content_start = True
                else:
                    self.in_reasoning = True
                continue
            hold = _partial_suffix(self._buf, marker)
            emit = self._buf[: len(self._buf) - hold]
            if emit:
                out.append(("reasoning" if self.in_reasoning else "content", emit))
            self._buf = self._buf[len(self._buf) - hold:]
            break
        return out

    def flush(self) -> list[tuple[str, str]]:
        rest, self._buf = self._buf, ""
        return [("reasoning" if self.in_reasoning else "content", rest)] if rest else []


def _partial_suffix(text: str, marker: str) -> int:
    for k in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:k]):
            return k
    return 0


_BOXED_OPEN = re.compile(r"\\boxed\s*\{")


def boxed_closed(text: str) -> bool:
    """True once the text after a forced `\\boxed{` prefix has closed its brace."""
    depth = 1
    for ch in text:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return True
    return False
