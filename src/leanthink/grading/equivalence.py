"""Is a predicted answer equal to the gold one? Delegates to Hugging Face `math-verify`.

math-verify parses numbers, fractions, LaTeX and sets and compares them symbolically.
Its default timeout uses SIGALRM, which only works in the main thread; the bench runner
grades from worker threads, so timeouts are disabled and a plain-string fallback kept.
"""

from __future__ import annotations

import threading

from .extract import _clean_number


def _parse(s: str):
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    main = threading.current_thread() is threading.main_thread()
    kw = {} if main else {"parsing_timeout": None}
    text = s if "$" in s else f"${s}$"  # math-verify reads bare expressions best as inline LaTeX
    return parse(text, extraction_config=[LatexExtractionConfig(), ExprExtractionConfig()], **kw)


def is_equivalent(pred: str | None, gold: str) -> bool:
    if pred is None or pred.strip() == "":
        return False
    p, g = pred.strip(), gold.strip()
    if _clean_number(p) == _clean_number(g):
        return True
    try:
        from math_verify import verify

        gp, pp = _parse(g), _parse(p)
        if not gp or not pp:
            return False
        main = threading.current_thread() is threading.main_thread()
        kw = {} if main else {"timeout_seconds": None}
        return bool(verify(gp, pp, **kw))
    except Exception:  # math-verify raises on exotic input; treat as not equal
        return False
