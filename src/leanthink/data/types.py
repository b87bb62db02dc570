"""The two records every loader returns."""

from __future__ import annotations

from dataclasses import dataclass, field

#: How a gold answer is compared later: a plain number, a LaTeX expression, or a
#: short string compared after normalisation (case, whitespace, punctuation).
KINDS = ("number", "math", "text")


@dataclass
class Item:
    id: str  # stable id: "gsm8k/17", "math500/test/precalculus/807.json", "gsm_symbolic/seed0/3"
    question: str
    answer: str  # gold answer, already extracted
    kind: str  # "number", "math" (LaTeX expression) or "text"
    meta: dict = field(default_factory=dict)  # level, subject, solution, ...


@dataclass
class Dataset:
    name: str  # "gsm8k", "rg:syllogism", "builtin", a file stem, ...
    source: str  # path or generator description, for reports
    items: list[Item]
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        return iter(self.items)
