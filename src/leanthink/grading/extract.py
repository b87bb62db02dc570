"""Pull the final answer out of model text.

Order of preference follows common math-eval practice: the last `\\boxed{}`, a GSM8K
`#### N` line, an explicit "the answer is X", and finally the last number.
"""

from __future__ import annotations

import re

_NUMBER = r"-?\$?\d[\d,]*(?:\.\d+)?%?|-?\.\d+"
_HASH_RE = re.compile(r"####\s*(.+)")
_ANSWER_IS_RE = re.compile(
    r"(?:final answer|the answer)\s*(?:is|:|=)\s*[:\s]*(\$?\\boxed\{.*?\}\$?|\$[^$]+\$|[^\n.]+)",
    re.IGNORECASE,
)
_NUMBER_RE = re.compile(_NUMBER)


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (or `\\fbox{...}`), with nested braces balanced."""
    idx = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if idx < 0:
        return None
    i = text.find("{", idx)
    if i < 0:
        # `\boxed 5` form
        m = re.match(r"\\boxed\s+([^\s$]+)", text[idx:])
        return m.group(1) if m else None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j].strip()
    return text[i + 1 :].strip() or None  # unclosed: take the rest


def _clean_number(s: str) -> str:
    s = s.replace(",", "").replace("$", "").rstrip("%").strip()
    if re.fullmatch(r"-?\d+\.0+", s):
        s = s.split(".")[0]
    return s


def extract_answer(text: str) -> str | None:
    if not text:
        return None
    boxed = last_boxed(text)
    if boxed is not None and boxed != "":
        return boxed
    m = _HASH_RE.findall(text)
    if m:
        return _clean_number(m[-1].strip()) if _NUMBER_RE.fullmatch(m[-1].strip()) else m[-1].strip()
    m = _ANSWER_IS_RE.findall(text)
    if m:
        cand = m[-1].strip().strip("$").strip()
        inner = last_boxed(cand)
        if inner:
            return inner
        nums = _NUMBER_RE.findall(cand)
        if nums and len(cand) > 12:
            return _clean_number(nums[0])
        return _clean_number(cand) if _NUMBER_RE.fullmatch(cand) else cand
    nums = _NUMBER_RE.findall(text)
    if nums:
        return _clean_number(nums[-1])
    return None


def gsm8k_gold(answer_field: str) -> str:
    """Gold answer of a GSM8K item: the text after `####`."""
    m = _HASH_RE.search(answer_field)
    if not m:
        raise ValueError("GSM8K answer has no '#### N' line")
    return _clean_number(m.group(1).strip())
