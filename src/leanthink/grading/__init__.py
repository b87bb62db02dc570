"""Answer extraction and equivalence checking."""

from .equivalence import is_equivalent
from .extract import extract_answer, gsm8k_gold, last_boxed

__all__ = ["extract_answer", "is_equivalent", "gsm8k_gold", "last_boxed"]
