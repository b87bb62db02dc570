"""The training JSONL every compressor writes and `leanthink train sft` reads.

One example per line (`datasets.load_dataset("json", data_files=...)` loads it as is):

    {"prompt": [{"role": "user", "content": QUESTION + "\\n\\n" + ANSWER_INSTRUCTION [+ "\\n\\n" + SUFFIX]}],
     "completion": [{"role": "assistant", "content": COMPLETION}],
     "weight": 1.0, "meta": {"item_id", "source", "compressor", "importance", "orig_tokens", "tokens", "gold", ...}}

plus `NAME.summary.json` next to it (kept, dropped by reason, mean ratio, spec, chains dir).

Why the prompt is built here the way `methods.engine.build_prompt` builds it: the trained model
must see at inference (`leanthink solve/bench` under `think`) exactly the turn it was trained
on; the chat template itself is applied by the trainer's tokenizer, as `render_chat` does.
A `system` message appears only when a prompt style asks for one (build_prompt adds none).

The completion depends on how the model family thinks (`reasoning.Family`):
  * native thinking (R1 distills, Qwen3, QwQ): `<think>\\nREASONING\\n</think>\\n\\nANSWER`
  * emulated thinking (Qwen2.5, SmolLM2, generic instruct): `REASONING ANSWER` with no tags: under
    `think` these models' reasoning is their own text up to the first `\\boxed{`, so training them
    to write `<think>` tags would put the tags into the counted thinking and change the format
    the harness measures.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Iterable

from ..errors import DataError
from ..methods.prompting import TOKENSKIP_SUFFIX  # one definition for training and inference
from ..reasoning import ANSWER_INSTRUCTION, Family

#: TokenSkip's ratio condition (`TOKENSKIP_SUFFIX`) is appended to the user turn after the answer
#: instruction, separated by a blank line, exactly where prompt-level methods put their `user_suffix`;
#: at inference the `tokenskip(ratio=γ)` method adds the same line: e.g. `Compression ratio: 0.6`.

REQUIRED = ("prompt", "completion")


def ratio_suffix(ratio: float) -> str:
    return TOKENSKIP_SUFFIX.format(ratio=ratio)


def prompt_messages(question: str, *, user_suffix: str = "", system: str = "") -> list[dict]:
    """The chat turn `build_prompt` renders for `think` (with an optional prompt-style suffix)."""
    user = f"{question.strip()}\n\n{ANSWER_INSTRUCTION}"
    if user_suffix:
        user = f"{user}\n\n{user_suffix}"
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]


_INLINE_OPEN = re.compile(r"(\\\(|\\\[|\$|\()\s*$")


def format_completion(family: Family, reasoning: str, answer_text: str) -> str:
    """The assistant turn for a (reasoning, answer) pair in the family's thinking format."""
    reasoning, answer_text = reasoning.strip(), answer_text.strip()
    if family.native_thinking:
        return f"{family.think_start}\n{reasoning}\n{family.think_end}\n\n{answer_text}"
    return join_emulated(reasoning, answer_text)


def join_emulated(reasoning: str, answer_text: str) -> str:
    """Rejoin an emulated chain. The splitter cut it at the first `\\boxed{` and stripped the
    whitespace there: an inline-math opener (`\\(`, `$`) joins directly, a sentence that leads
    into the answer (`... is`, `:`) with a space, anything else with a blank line."""
    if not reasoning:
        return answer_text
    if _INLINE_OPEN.search(reasoning):
        return reasoning + answer_text
    if reasoning.endswith((":", "=")) or re.search(r"\b(is|are|be|of|was)$", reasoning):
        return f"{reasoning} {answer_text}"
    return f"{reasoning}\n\n{answer_text}"


def make_example(question: str, completion: str, *, weight: float = 1.0, meta: dict | None = None,
                 user_suffix: str = "", system: str = "") -> dict:
    return {"prompt": prompt_messages(question, user_suffix=user_suffix, system=system),
            "completion": [{"role": "assistant", "content": completion}],
            "weight": float(weight), "meta": dict(meta or {})}


def summary_path(path: str | os.PathLike) -> Path:
    p = Path(path)
    stem = p.name[: -len(".jsonl")] if p.name.endswith(".jsonl") else p.name
    return p.with_name(stem + ".summary.json")


def write_examples(path: str | os.PathLike, examples: Iterable[dict], summary: dict) -> Path:
    """Write the JSONL (atomically: a temp file renamed into place) and its summary sidecar."""
    p = Path(path)
    if p.exists() and p.is_dir():
        raise DataError(f"output '{path}' is a directory; give a .jsonl file path")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            for ex in examples:
                validate_example(ex, where=str(p))
                fh.write(json.dumps(ex, ensure_ascii=False) + "\n")
        os.replace(tmp, p)
        summary_path(p).write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    except OSError as exc:
        raise DataError(f"cannot write '{path}': {exc.strerror or exc}") from None
    return p


def _messages_ok(value, where: str, field: str, last_role: str) -> None:
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: '{field}' must be a non-empty list of {{role, content}} messages")
    for m in value:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise DataError(f"{where}: every '{field}' message needs a string 'role' and 'content'")
    if value[-1]["role"] != last_role:
        raise DataError(f"{where}: the last '{field}' message must have role '{last_role}'")


def validate_example(ex, *, where: str = "example") -> None:
    """One-line DataError naming what is wrong with an example (fields, roles, weight)."""
    if not isinstance(ex, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(ex).__name__}")
    missing = [f for f in REQUIRED if f not in ex]
    if missing:
        have = ", ".join(sorted(map(str, ex))) or "none"
        raise DataError(f"{where}: expected fields 'prompt' and 'completion' (missing {', '.join(missing)}; has {have})")
    _messages_ok(ex["prompt"], where, "prompt", "user")
    _messages_ok(ex["completion"], where, "completion", "assistant")
    w = ex.get("weight", 1.0)
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
        raise DataError(f"{where}: 'weight' must be a finite number >= 0, got {w!r}")
    if "meta" in ex and not isinstance(ex["meta"], dict):
        raise DataError(f"{where}: 'meta' must be an object")


def read_examples(path: str | os.PathLike) -> list[dict]:
    """Read and validate a training JSONL; errors are one line naming file and line."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"training data '{path}' does not exist" if not p.exists() else f"'{path}' is not a file")
    out = []
    try:
        with open(p, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    ex = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{p}:{lineno}: not JSON ({exc.msg} at column {exc.colno})") from None
                validate_example(ex, where=f"{p}:{lineno}")
                out.append(ex)
    except UnicodeDecodeError as exc:
        raise DataError(f"{p}: not UTF-8 text ({exc.reason})") from None
    if not out:
        raise DataError(f"{p}: no examples")
    return out
