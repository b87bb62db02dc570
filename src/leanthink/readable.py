"""How an answer reads: the two answer formats, the clean emulated split, plain text.

Every chain is prompted the same way ("... put your final answer within \\boxed{}"), so
methods and graders can read the answer. What is *shown* differs by caller:

* `boxed` (the grading form; bench, `solve()` by default): a forced answer is
  `**Final Answer**\\n\\boxed{40}`, and emulated thinking ends exactly at the model's first
  `\\boxed{`, the marker the methods act on.
* `natural` (what a person reads; the proxy by default, `stream_solve`): when thinking is
  forced to end, the model writes its own final answer after it (counted as answer tokens);
  emulated thinking ends at the start of the sentence in which the model gives its boxed
  answer (`So the total is \\(\\boxed{40}\\).` is the answer, not `\\boxed{40}\\).` after a
  reasoning that ends in `\\(`); and the text shown is `plain()`: `\\boxed{}` unwrapped, math
  delimiters and simple LaTeX commands written as text (`So the total is 40.`).

The same rules run on streamed deltas (`AnswerStream`), so a streamed answer reads exactly
like the non-streamed one.
"""

from __future__ import annotations

import re

ANSWER_FORMATS = ("natural", "boxed")

NATURAL_LEAD = "So the final answer is"
"""What ends emulated thinking in the natural form when a method cuts it: the model then
completes the sentence itself (an instruct model has no end-of-thinking marker)."""

FORCED_HEADER = "**Final Answer**"
"""The header of the answer prefix leanthink injects in the boxed form (`Family.answer_prefix`)."""


def check_answer_format(value: str, where: str = "answer_format") -> str:
    from .errors import ConfigError

    if value not in ANSWER_FORMATS:
        raise ConfigError(f"{where} must be one of {', '.join(ANSWER_FORMATS)}, got {value!r}")
    return value


# -- the clean emulated split --------------------------------------------------------------
_OPENERS = ("\\(", "\\[", "$$", "$")
_SENTENCE_END = re.compile(r"[.!?][\"')\]*]*[ \t]+")
_ENDS_SENTENCE = re.compile(r"[.!?][\"')\]*]*$")


def _strip_trailing(r: str) -> int:
    """End of `r` without its trailing whitespace and math openers (they belong to the answer)."""
    i = len(r)
    while True:
        j = len(r[:i].rstrip())
        for op in _OPENERS:
            if r[:j].endswith(op):
                j -= len(op)
                break
        if j == i:
            return i
        i = j


MAX_LEAD = 200
"""At most this many characters (whole words) open the answer: a model that writes a long
paragraph without a sentence end still streams its reasoning."""


def _last_boundary(r: str, i: int) -> int:
    """Start of the sentence that contains position `i`: after the last newline or the last
    sentence end (`. ` `! ` `? `) before it, and no more than `MAX_LEAD` characters back."""
    start = r.rfind("\n", 0, i) + 1
    for m in _SENTENCE_END.finditer(r, start, i):
        start = m.end()
    if i - start > MAX_LEAD:
        j = r.find(" ", i - MAX_LEAD, i)
        if j != -1:
            start = j + 1
    return start


def lead_start(reasoning: str, *, complete: bool = True) -> int:
    """Where the sentence that introduces the boxed answer begins in emulated reasoning.

    `reasoning` is the text before the model's first `\\boxed{`. With `complete=False` it
    may still grow (streaming): the position returned then never passes the final one, and
    never moves back as text arrives, so everything before it can be sent as reasoning."""
    i = _strip_trailing(reasoning)
    start = _last_boundary(reasoning, i)
    if complete and _ENDS_SENTENCE.search(reasoning[start:i]):
        return i  # the last sentence is complete: only delimiters and whitespace move
    return start


def natural_split(reasoning: str, answer_text: str) -> tuple[str, str, str]:
    """(reasoning, answer_text, lead) for an emulated chain that ended at its own `\\boxed{`:
    the sentence introducing the answer moves from the reasoning to the answer."""
    cut = lead_start(reasoning)
    lead = reasoning[cut:]
    if not lead.strip():
        return reasoning.strip(), answer_text.strip(), ""
    return reasoning[:cut].strip(), (lead + answer_text).strip(), lead


# -- plain text ------------------------------------------------------------------------------
_SYMBOLS = {
    "times": "×", "cdot": "·", "div": "÷", "pm": "±", "mp": "∓", "leq": "≤", "le": "≤", "geq": "≥", "ge": "≥",
    "neq": "≠", "ne": "≠", "approx": "≈", "infty": "∞", "pi": "π", "degree": "°", "circ": "°", "to": "→",
    "rightarrow": "→", "Rightarrow": "⇒", "implies": "⇒", "quad": " ", "qquad": " ", "dots": "…", "ldots": "…",
    "cdots": "…", "sqrt": "√", "left": "", "right": "", "displaystyle": "", "bigl": "", "bigr": "", "Bigl": "", "Bigr": "",
}
_ESCAPES = {"%": "%", "$": "$", "&": "&", "#": "#", "_": "_", "{": "{", "}": "}", ",": " ", ";": " ", ":": " ", "!": "", " ": " ", "\\": " "}
_UNWRAP = ("boxed", "fbox", "text", "textbf", "textit", "mathrm", "mathbf", "mathit", "operatorname", "mbox", "emph")
_FRACS = ("frac", "dfrac", "tfrac")


def _group(s: str, i: int) -> tuple[str, int] | None:
    """The balanced `{...}` group starting at s[i] (after optional spaces): (inner, end)."""
    while i < len(s) and s[i] == " ":
        i += 1
    if i >= len(s) or s[i] != "{":
        return None
    depth = 0
    for j in range(i, len(s)):
        if s[j] == "{":
            depth += 1
        elif s[j] == "}":
            depth -= 1
            if depth == 0:
                return s[i + 1:j], j + 1
    return s[i + 1:], len(s)  # unclosed (a cut answer): take the rest


def _latex(s: str) -> str:
    """Simple LaTeX to text: commands that wrap text are unwrapped, fractions become a/b,
    common symbols become their characters; unknown commands lose their backslash."""
    out, i = [], 0
    while i < len(s):
        ch = s[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        m = re.match(r"\\([A-Za-z]+)", s[i:])
        if not m:
            nxt = s[i + 1:i + 2]
            if nxt in ("(", ")", "[", "]"):
                i += 2
                continue
            out.append(_ESCAPES.get(nxt, nxt))
            i += 2
            continue
        name, j = m.group(1), i + len(m.group(0))
        if name in _UNWRAP:
            g = _group(s, j)
            if g is not None:
                out.append(_latex(g[0]))
                i = g[1]
                continue
        if name in _FRACS:
            a = _group(s, j)
            b = _group(s, a[1]) if a else None
            if a and b:
                num, den = _latex(a[0]), _latex(b[0])
                wrap = lambda t: t if re.fullmatch(r"[\w.]+", t) else f"({t})"  # noqa: E731
                out.append(f"{wrap(num)}/{wrap(den)}")
                i = b[1]
                continue
        out.append(_SYMBOLS.get(name, name))
        i = j
    return "".join(out)


_DOLLAR_MATH = re.compile(r"\$\$|\$(?=\S)([^$\n]*?\S)\$(?!\d)")
_DELIMS = re.compile(r"\\\(\s*|\s*\\\)|\\\[\s*|\s*\\\]")


def _plain_piece(piece: str) -> str:
    body = piece.rstrip("\n")
    newline = piece[len(body):]
    if not body.strip():
        return piece
    text = _DOLLAR_MATH.sub(lambda m: m.group(1) or "", body)
    text = _DELIMS.sub("", text)
    text = _latex(text)
    text = re.sub(r"[ \t]{2,}", " ", text)
    text = re.sub(r" ([.,;:!?])", r"\1", text)
    if not text.strip():
        return ""  # a line that held only delimiters (`\[`, `$$`) disappears with its newline
    return text.rstrip() + newline


def _pieces(text: str) -> list[str]:
    """Split after newlines that are outside any `{...}` group: the units `plain` renders one by
    one, so rendering streamed text piece by piece gives the same result as rendering it whole."""
    out, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth = max(0, depth - 1)
        elif ch == "\n" and depth == 0:
            out.append(text[start:i + 1])
            start = i + 1
    if start < len(text):
        out.append(text[start:])
    return out


def _drop_header(text: str) -> str:
    head = text.lstrip()
    if head.startswith(FORCED_HEADER):
        return head[len(FORCED_HEADER):].lstrip("\n ")
    return text


def plain(text: str) -> str:
    """The answer as a person reads it: leanthink's `**Final Answer**` header dropped,
    `\\boxed{}` unwrapped, `\\( \\) \\[ \\] $...$` delimiters removed, simple LaTeX as text."""
    return "".join(_plain_piece(p) for p in _pieces(_drop_header(text))).strip()


# -- streaming ---------------------------------------------------------------------------------
class _PlainStream:
    """`plain()` for streamed deltas: holds text back until a newline outside braces."""

    def __init__(self):
        self._buf = ""
        self._started = False

    def feed(self, delta: str) -> str:
        self._buf += delta
        if not self._started:
            head = self._buf.lstrip()
            if not head or (FORCED_HEADER.startswith(head) and len(head) < len(FORCED_HEADER)):
                return ""  # maybe the start of the header
            self._buf = _drop_header(self._buf)
            self._started = True
        pieces = _pieces(self._buf)
        if pieces and not pieces[-1].endswith("\n"):
            self._buf = pieces.pop()
        else:
            self._buf = ""
        return "".join(_plain_piece(p) for p in pieces)

    def flush(self) -> str:
        rest, self._buf = self._buf, ""
        if not self._started:
            rest = _drop_header(rest)
        return _plain_piece(rest).rstrip() if rest else ""


class AnswerStream:
    """Reshapes a chain's streamed `(channel, text)` deltas for display in the natural form.

    For emulated thinking it holds back the current sentence of the reasoning: if the model's
    next text is its boxed answer, that sentence opens the answer (as in `natural_split`);
    otherwise it is sent as reasoning once the next sentence begins. Answer text is made
    `plain`. In the boxed form deltas pass through unchanged."""

    def __init__(self, emulated: bool, natural: bool = True):
        self.emulated = emulated and natural
        self.natural = natural
        self._reasoning = ""
        self._sent = 0
        self._content_started = False
        self._head = ""
        self._plain = _PlainStream() if natural else None

    def feed(self, channel: str, text: str) -> list[tuple[str, str]]:
        if not text:
            return []
        if not self.natural:
            return [(channel, text)]
        out: list[tuple[str, str]] = []
        if channel == "reasoning":
            if not self.emulated or self._content_started:
                return [("reasoning", text)]
            self._reasoning += text
            cut = lead_start(self._reasoning, complete=False)
            if cut > self._sent:
                out.append(("reasoning", self._reasoning[self._sent:cut]))
                self._sent = cut
            return out
        if self.emulated and not self._content_started:
            self._head += text
            head = self._head.lstrip()
            if "\\boxed".startswith(head):
                return out  # not decided yet: maybe the start of `\boxed`
            text, self._head = self._head, ""
            if head.startswith("\\boxed"):  # the model's own answer: the held sentence opens it
                cut = max(self._sent, lead_start(self._reasoning))
                if cut > self._sent:
                    out.append(("reasoning", self._reasoning[self._sent:cut]))
                text = self._reasoning[cut:] + text
            else:
                out += self._release()
        self._content_started = True
        shown = self._plain.feed(text)
        if shown:
            out.append(("content", shown))
        return out

    def _release(self) -> list[tuple[str, str]]:
        rest = self._reasoning[self._sent:]
        self._sent = len(self._reasoning)
        return [("reasoning", rest)] if rest else []

    def flush(self) -> list[tuple[str, str]]:
        """Everything still held back (call once the chain is done)."""
        if not self.natural:
            return []
        out: list[tuple[str, str]] = []
        if not self._content_started:
            out += self._release()
            if self._head:
                self._content_started = True
                out += [("content", t) for t in [self._plain.feed(self._head)] if t]
                self._head = ""
        tail = self._plain.flush()
        if tail:
            out.append(("content", tail))
        return out


def remainder(final: str, sent: str) -> str:
    """What is left to send of `final` after `sent` was streamed: the rest if `sent` is its
    start, else nothing (streamed text cannot be taken back, e.g. an early answer that
    `budget(min_thinking=...)` suppressed)."""
    done = sent.strip()
    if not done:
        return final
    if final.startswith(done) and len(final) > len(done):
        return final[len(done):]
    return ""
