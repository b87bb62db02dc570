"""Is a predicted answer equal to the gold one? Delegates to Hugging Face `math-verify`.

math-verify parses numbers, fractions, LaTeX and sets and compares them symbolically.
Its default timeout uses SIGALRM, which only works in the main thread; the bench runner
grades from worker threads, so timeouts are disabled and a plain-string fallback kept.

math-verify can raise on exotic input (a sympy error, a recursion limit). That is not a
wrong answer: `equivalent` raises `GradingError` so a benchmark records a grading error
(counted in the report) instead of silently lowering the accuracy. `is_equivalent` is the
lenient form for callers where "cannot compare" may mean "not the same" (vote grouping).
"""

from __future__ import annotations

import threading

from .extract import _clean_number


class GradingError(Exception):
    """The grader itself failed on this (prediction, gold) pair; the message says how."""


def _parse(s: str):
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    main = threading.current_thread() is threading.main_thread()
    kw = {} if main else {"parsing_timeout": None}
    text = s if "$" in s else f"${s}$"  # math-verify reads bare expressions best as inline LaTeX
    return parse(text, extraction_config=[LatexExtractionConfig(), ExprExtractionConfig()], **kw)


def _verify(gold: str, pred: str) -> bool:
    from math_verify import verify

    gp, pp = _parse(gold), _parse(pred)
    if not gp or not pp:
        return False
    main = threading.current_thread() is threading.main_thread()
    kw = {} if main else {"timeout_seconds": None}
    return bool(verify(gp, pp, **kw))


def equivalent(pred: str | None, gold: str) -> bool:
    """True when `pred` equals `gold`; raises `GradingError` when math-verify fails on them."""
    if pred is None or pred.strip() == "":
        return False
    p, g = pred.strip(), gold.strip()
    if _clean_number(p) == _clean_number(g):
        return True
    try:
        return _verify(g, p)
    except Exception as exc:  # math-verify's (and sympy's) failures have no common base class
        raise GradingError(f"math-verify failed on {p[:80]!r} vs {g[:80]!r}: {type(exc).__name__}: {exc}"[:300]) from exc


def is_equivalent(pred: str | None, gold: str) -> bool:
    """`equivalent`, with a grader failure read as "not equal": for grouping answers (votes),
    where an uncomparable pair simply stays in two groups. Benchmarks grade with
    `grading.grade_outcome`, which records the failure instead."""
    try:
        return equivalent(pred, gold)
    except GradingError:
        return False
