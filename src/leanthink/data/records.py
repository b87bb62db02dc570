"""Turn JSON records (JSONL lines, Hugging Face rows) into `Item`s.

A `FieldMap` says which field holds the question, the answer and the id, and how the
answer is to be read (`kind`). Malformed records raise `BadRecord`; the caller turns it
into a `DataError` naming file and line, or records it when skipping bad lines.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, DataError
from ..grading.extract import gsm8k_gold, last_boxed
from .types import Item

QUESTION_FIELDS = ("question", "problem", "prompt")
ANSWER_FIELDS = ("answer", "final_answer", "solution")
ID_FIELDS = ("id", "unique_id", "idx")
#: Accepted `kind=` values: the three item kinds, `gsm8k` (answer ends with `#### N`)
#: and `auto` (gsm8k if there is a `####` line, number if numeric, else math).
SPEC_KINDS = ("number", "math", "text", "gsm8k", "auto")

_NUMERIC = re.compile(r"[-+]?(?:\d[\d,]*(?:\.\d+)?|\.\d+)")


class BadRecord(Exception):
    """One malformed record; the message is the reason."""


class MissingField(BadRecord):
    """A record lacks the question/answer field: usually the whole file names its fields
    differently, so the fix is naming them in the spec, not skipping lines."""


FIELDS_HINT = "name the fields in the dataset spec: jsonl:PATH?question=FIELD&answer=FIELD (hf:ID?question=...&answer=... alike)"


def is_number(text: str) -> bool:
    return bool(_NUMERIC.fullmatch(text.strip()))


def clean_number(text: str) -> str:
    s = text.strip().replace(",", "")
    if s.startswith("+"):
        s = s[1:]
    if re.fullmatch(r"-?\d+\.0+", s):
        s = s.split(".")[0]
    return s


@dataclass
class FieldMap:
    prefix: str  # id prefix, usually the dataset name
    question: str | None = None  # None: first of QUESTION_FIELDS present
    answer: str | None = None  # None: first of ANSWER_FIELDS present
    kind: str = "auto"
    id: str | None = None  # None: first of ID_FIELDS present, else the record index
    meta_fields: tuple[str, ...] | None = None  # None: every other scalar field

    def __post_init__(self):
        if self.kind not in SPEC_KINDS:
            raise ConfigError(f"unknown kind {self.kind!r}; use one of: {', '.join(SPEC_KINDS)}")


def _pick(row: dict, wanted: str | None, defaults: tuple[str, ...], what: str) -> str:
    has = ", ".join(repr(k) for k in list(row)[:12]) + (", ..." if len(row) > 12 else "")
    if wanted is not None:
        if wanted not in row:
            raise MissingField(f"missing {what} field {wanted!r}; the record has {has or 'no fields'}")
        return wanted
    for name in defaults:
        if name in row:
            return name
    raise MissingField(f"missing {what} field (tried {', '.join(defaults)}); the record has {has or 'no fields'}")


def _scalar_text(value, what: str) -> str:
    if isinstance(value, bool) or value is None or isinstance(value, (dict, list)):
        raise BadRecord(f"{what} must be a string or a number, got {type(value).__name__ if value is not None else 'null'}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _answer(raw: str, kind: str, from_solution: bool) -> tuple[str, str]:
    """(gold answer, item kind) from the raw answer field."""
    if kind == "gsm8k" or (kind == "auto" and "####" in raw):
        try:
            return gsm8k_gold(raw), "number"
        except ValueError:
            raise BadRecord("GSM8K answer has no '#### N' line") from None
    if from_solution:  # a worked solution: take its last \boxed{} when there is one
        boxed = last_boxed(raw)
        if boxed:
            raw = boxed
    if kind == "auto":
        kind = "number" if is_number(raw) else "math"
    if kind == "number" and is_number(raw):
        raw = clean_number(raw)
    return raw, kind


def row_to_item(row, fm: FieldMap, index: int) -> Item:
    """Convert one record; `index` (0-based position) is the fallback id."""
    if not isinstance(row, dict):
        raise BadRecord(f"expected a JSON object, got {type(row).__name__}")
    qf = _pick(row, fm.question, QUESTION_FIELDS, "question")
    af = _pick(row, fm.answer, ANSWER_FIELDS, "answer")
    question = row[qf]
    if not isinstance(question, str):
        raise BadRecord(f"question field {qf!r} must be a string, got {type(question).__name__}")
    question = question.strip()
    if not question:
        raise BadRecord(f"empty question (field {qf!r})")
    raw = _scalar_text(row[af], f"answer field {af!r}")
    if not raw:
        raise BadRecord(f"empty answer (field {af!r})")
    answer, kind = _answer(raw, fm.kind, from_solution=(af == "solution"))
    if not answer:
        raise BadRecord(f"empty answer (field {af!r})")

    idf = fm.id if fm.id is not None else next((f for f in ID_FIELDS if f in row), None)
    if idf is not None and row.get(idf) not in (None, ""):
        ident = f"{fm.prefix}/{_scalar_text(row[idf], f'id field {idf!r}')}"
    else:
        ident = f"{fm.prefix}/{index}"

    used = {qf, af, idf}
    if fm.meta_fields is not None:
        meta = {k: row[k] for k in fm.meta_fields if k in row and k not in used}
    else:
        meta = {k: v for k, v in row.items() if k not in used and (v is None or isinstance(v, (str, int, float, bool)))}
    if answer != raw.strip() or af == "solution":
        meta.setdefault("solution", raw if af != "solution" else row[af])
    return Item(id=ident, question=question, answer=answer, kind=kind, meta=meta)


def iter_jsonl(path: Path) -> Iterator[tuple[int, object]]:
    """(1-based line number, parsed value or BadRecord) for each non-blank line."""
    try:
        fh = open(path, encoding="utf-8-sig")
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc
    with fh:
        lineno = 0
        try:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    yield lineno, json.loads(line)
                except json.JSONDecodeError as exc:
                    yield lineno, BadRecord(f"invalid JSON ({exc.msg} at column {exc.colno})")
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}:{lineno + 1}: not valid UTF-8 text ({exc.reason})") from exc


def collect(
    records: Iterable[tuple[int, object]],
    fm: FieldMap,
    *,
    where: str,
    limit: int | None,
    skip_bad: bool,
) -> tuple[list[Item], list[tuple[int, str]]]:
    """Convert records until `limit` items; `where` labels errors as `where:LINE: reason`."""
    items: list[Item] = []
    skipped: list[tuple[int, str]] = []
    index = 0
    for lineno, rec in records:
        try:
            if isinstance(rec, BadRecord):
                raise rec
            item = row_to_item(rec, fm, index)
        except BadRecord as exc:
            if not skip_bad:
                fix = FIELDS_HINT if isinstance(exc, MissingField) else \
                    "fix the line, or skip malformed lines with skip_bad=True / --skip-bad"
                raise DataError(f"{where}:{lineno}: {exc} ({fix})") from None
            skipped.append((lineno, str(exc)))
            continue
        finally:
            index += 1
        items.append(item)
        if limit is not None and len(items) >= limit:
            break
    return items, skipped
