"""The procedural task the latent recipes are trained and measured on, and its text format.

Why a chain of single-digit additions and subtractions (`chain`, e.g. `7+5-3+9`): a
135M-parameter model learns it from a few hundred examples in minutes of CPU training,
every problem has an exact step-by-step solution (one running total per step), the number
of steps is fixed (so Coconut's curriculum has well-defined stages) and answering without
the steps is clearly harder than with them, which is what the comparison needs. SmolLM2's
tokenizer writes every digit as its own token, so the steps are short and regular.

Why a plain prompt rather than the chat template: on 2 shared CPU cores training runs at a
few dozen tokens/s, and the chat template with its system prompt and answer instruction
triples every sequence. Every recipe and every inference method uses `prompt_text`, so the
comparison between them stays exact; `latent.json` records the format.

Splits: the evaluation questions come from a fixed seed (`EVAL_SEED`) and the training
sampler skips every one of them, so the splits are disjoint whatever the training seed.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

EVAL_SEED = 20261126
ANSWER_MARK = "####"
"""Written before the final answer; the inference methods read the answer after it."""


@dataclass(frozen=True)
class Example:
    question: str
    """The expression, e.g. `7+5-3+9`."""
    steps: tuple[str, ...]
    """One line per operation, e.g. (`7+5=12`, `12-3=9`, `9+9=18`)."""
    answer: str


@dataclass(frozen=True)
class TaskSpec:
    """`chain` (4 operands) or `chain:N` (N operands, N-1 steps), digits 1..9, + and -."""

    name: str = "chain"
    operands: int = 4

    @property
    def n_steps(self) -> int:
        return self.operands - 1

    @property
    def spec(self) -> str:
        return self.name if self.operands == 4 else f"{self.name}:{self.operands}"


def parse_task(spec: str) -> TaskSpec:
    """`chain` or `chain:N` -> TaskSpec; anything else is a one-line ConfigError."""
    m = re.fullmatch(r"\s*chain(?::(\d+))?\s*", spec or "")
    if not m:
        raise ConfigError(f"unknown latent task '{spec}'; known: chain, chain:N (N operands, 3..8)")
    n = int(m.group(1) or 4)
    if not 3 <= n <= 8:
        raise ConfigError(f"task '{spec}': the number of operands must be in 3..8, got {n}")
    return TaskSpec("chain", n)


def make_example(rng: random.Random, task: TaskSpec) -> Example:
    """A random chain whose running total never goes below zero (so no step has a sign to learn)."""
    total = rng.randint(1, 9)
    expr, steps = str(total), []
    for _ in range(task.n_steps):
        d = rng.randint(1, 9)
        op = "-" if (rng.random() < 0.5 and total - d >= 0) else "+"
        new = total + d if op == "+" else total - d
        steps.append(f"{total}{op}{d}={new}")
        expr += f"{op}{d}"
        total = new
    return Example(expr, tuple(steps), str(total))


def eval_examples(task: TaskSpec, n: int) -> list[Example]:
    """The first `n` distinct questions from the fixed evaluation seed."""
    rng = random.Random(f"{EVAL_SEED}:{task.spec}")
    seen: dict[str, Example] = {}
    for _ in range(n * 50):
        ex = make_example(rng, task)
        seen.setdefault(ex.question, ex)
        if len(seen) >= n:
            break
    return list(seen.values())


def train_examples(task: TaskSpec, n: int, seed: int, *, n_eval: int = 500) -> list[Example]:
    """`n` distinct training questions, none of them among the first `n_eval` evaluation ones."""
    held_out = {ex.question for ex in eval_examples(task, n_eval)}
    rng = random.Random(f"{seed}:{task.spec}:train")
    out: dict[str, Example] = {}
    for _ in range(n * 50):
        ex = make_example(rng, task)
        if ex.question not in held_out:
            out.setdefault(ex.question, ex)
        if len(out) >= n:
            break
    if len(out) < n:
        raise ConfigError(f"task '{task.spec}' has fewer than {n} distinct training questions")
    return list(out.values())


# -- text format (shared by every recipe and inference method) --------------------------------
def prompt_text(question: str) -> str:
    return f"Q: {question.strip()}\nA:\n"


def step_text(step: str) -> str:
    return f"{step}\n"


def answer_prefix() -> str:
    return f"{ANSWER_MARK} "


def cot_text(ex: Example) -> str:
    return "".join(step_text(s) for s in ex.steps) + answer_prefix() + ex.answer


def parse_answer(text: str) -> str | None:
    """The answer after the last `####`, or None when the model never wrote one."""
    if ANSWER_MARK not in text:
        return None
    tail = text.rsplit(ANSWER_MARK, 1)[1].strip()
    m = re.match(r"-?\d+", tail)
    return m.group(0) if m else (tail.split()[0] if tail.split() else None)


def split_reasoning(text: str) -> tuple[str, str]:
    """(reasoning, answer text) of a generated completion: split at the answer mark."""
    if ANSWER_MARK not in text:
        return text.strip(), ""
    head, tail = text.rsplit(ANSWER_MARK, 1)
    return head.strip(), f"{ANSWER_MARK}{tail}".strip()


def write_eval_jsonl(path: str | Path, task: TaskSpec, n: int) -> Path:
    """The evaluation split as a bench dataset (`leanthink bench --dataset jsonl:PATH?kind=number`)."""
    if n < 1:
        raise ConfigError(f"n must be >= 1, got {n}")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("w", encoding="utf-8") as fh:
        for i, ex in enumerate(eval_examples(task, n)):
            fh.write(json.dumps({"id": f"{task.spec}-{i}", "question": ex.question, "answer": ex.answer,
                                 "steps": list(ex.steps)}) + "\n")
    return p
