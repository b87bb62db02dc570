"""Answer extraction and equivalence checking."""

from __future__ import annotations

from dataclasses import dataclass

from .equivalence import GradingError, equivalent, is_equivalent
from .extract import extract_answer, gsm8k_gold, last_boxed

__all__ = ["extract_answer", "is_equivalent", "equivalent", "gsm8k_gold", "last_boxed", "grade", "grade_outcome",
           "Grade", "GradingError"]


def _text_norm(s: str) -> str:
    return " ".join(s.strip().strip(".").lower().split())


def _grade_strict(pred: str | None, gold: str, kind: str) -> bool:
    if pred is None:
        return False
    if kind == "text" and _text_norm(pred) == _text_norm(gold):
        return True
    return equivalent(pred, gold)


@dataclass(frozen=True)
class Grade:
    """The outcome of grading one answer: right or wrong, or `error` when the grader failed
    (then `correct` is False, but the answer was not judged wrong)."""

    correct: bool
    error: str | None = None


def grade_outcome(pred: str | None, gold: str, kind: str = "math") -> Grade:
    """Grade a prediction by the item's kind (number, math or text), keeping a grader
    failure apart from a wrong answer (bench records it as `grade_error`)."""
    try:
        return Grade(_grade_strict(pred, gold, kind))
    except GradingError as exc:
        return Grade(False, str(exc))


def grade(pred: str | None, gold: str, kind: str = "math") -> bool:
    """Compare a prediction with the gold answer by the item's kind (number, math or text).
    A grader failure reads as False: for labels and rewards, where no record keeps it."""
    return grade_outcome(pred, gold, kind).correct
