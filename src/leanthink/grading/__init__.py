"""Answer extraction and equivalence checking."""

from .equivalence import is_equivalent
from .extract import extract_answer, gsm8k_gold, last_boxed

__all__ = ["extract_answer", "is_equivalent", "gsm8k_gold", "last_boxed"]


def grade(pred: str | None, gold: str, kind: str = "math") -> bool:
    """Compare a prediction with the gold answer by the item's kind (number, math or text)."""
    if pred is None:
        return False
    if kind == "text":
        norm = lambda s: " ".join(s.strip().strip(".").lower().split())  # noqa: E731
        return norm(pred) == norm(gold) or is_equivalent(pred, gold)
    return is_equivalent(pred, gold)


__all__.append("grade")
