"""Length-aware rewards for GRPO, as plain functions (no torch, no trl: unit-testable exactly).

Two layers:
  * Scalar formulas on (correct, lengths), one per paper, so each is checked by hand:
    `l1_exact`, `l1_max` (L1/LCPO, Aggarwal & Welleck 2025), `shorter_better` (ShorterBetter,
    distance to the group's shortest correct answer), `think_prune` (ThinkPrune: a hard cap
    on thinking, over the cap earns nothing), `kimi_length` (Kimi k1.5's normalised group
    length penalty), `adapt_think` (AdaptThink: a bonus for a correct answer given without thinking).
  * `make_reward(spec)`: wraps one of them into TRL's reward-function signature
    `f(prompts, completions, **columns) -> list[float]`. Correctness comes from leanthink's
    grader (`extract_answer` + `grade`) against the dataset's `gold` column; lengths are
    token counts (`completion_ids` from TRL, thinking tokens via the `count` function given),
    and "group" means completions of the same prompt, as GRPO samples them.
"""

from __future__ import annotations

from typing import Callable, Sequence

from ..errors import ConfigError

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


# -- scalar formulas ------------------------------------------------------------------------

def correctness(correct: bool) -> float:
    return 1.0 if correct else 0.0


def l1_exact(correct: bool, length: int, target: int, alpha: float = 0.0003) -> float:
    """L1-Exact (LCPO): 1[correct] - alpha * |target - length|."""
    return correctness(correct) - alpha * abs(target - length)


def l1_max(correct: bool, length: int, target: int, alpha: float = 0.0003, delta: float = 0.5) -> float:
    """L1-Max: 1[correct] * clip(alpha * (target - length) + delta, 0, 1)."""
    return correctness(correct) * min(1.0, max(0.0, alpha * (target - length) + delta))


def shortest_correct_length(corrects: Sequence[bool], lengths: Sequence[int]) -> float:
    """ShorterBetter's sample-optimal length: the shortest correct length in the group, or the
    group's mean length when no sample is correct."""
    good = [n for c, n in zip(corrects, lengths) if c]
    return float(min(good)) if good else sum(lengths) / len(lengths)


def shorter_better(correct: bool, length: int, sol: float, alpha: float = 1.0, beta: float = 0.001) -> float:
    """ShorterBetter: alpha * 1[correct] - beta * |length - SOL|."""
    return alpha * correctness(correct) - beta * abs(length - sol)


def think_prune(correct: bool, thinking_tokens: int, closed: bool, cap: int) -> float:
    """ThinkPrune: correct only counts when thinking ended (closed) within `cap` tokens; else 0."""
    return correctness(correct and closed and thinking_tokens <= cap)


def kimi_length(correct: bool, length: int, min_len: int, max_len: int) -> float:
    """Kimi k1.5 length reward: lambda = 0.5 - (len - min)/(max - min) over the group (0 when all
    lengths are equal); a correct answer gets lambda, a wrong one min(0, lambda)."""
    lam = 0.0 if max_len == min_len else 0.5 - (length - min_len) / (max_len - min_len)
    return lam if correct else min(0.0, lam)


def adapt_think(correct: bool, thought: bool, delta: float = 0.05) -> float:
    """AdaptThink: 1[correct] + delta * 1[correct and no thinking]."""
    return correctness(correct) + (delta if correct and not thought else 0.0)


# -- completions -> numbers -----------------------------------------------------------------

def completion_text(c) -> str:
    """TRL passes strings (standard format) or [{role, content}] lists (conversational)."""
    if isinstance(c, str):
        return c
    if isinstance(c, list):
        return "".join(m.get("content", "") for m in c if isinstance(m, dict))
    if isinstance(c, dict):
        return str(c.get("content", ""))
    return str(c)


BOXED = "\\boxed{"


def split_think(text: str, emulated: bool = False) -> tuple[str, str, bool]:
    """(thinking, answer, closed). Native thinking: the prompt may already open `<think>`
    (leanthink's prefill), so thinking runs up to `</think>`. Emulated thinking (Qwen2.5, SmolLM2:
    `reasoning.Family.emulated`): thinking is the text before the first `\\boxed{`, as `think` counts it."""
    if emulated:
        thinking, sep, rest = text.partition(BOXED)
        return thinking.strip(), (sep + rest).strip(), bool(sep)
    body = text.lstrip()
    if body.startswith(THINK_OPEN):
        body = body[len(THINK_OPEN):]
    if THINK_CLOSE in body:
        thinking, _, answer = body.partition(THINK_CLOSE)
        return thinking.strip(), answer.strip(), True
    return body.strip(), "", False


def thought(text: str, emulated: bool = False) -> bool:
    """Whether the completion spent any tokens thinking (a non-empty think block, or one never closed;
    emulated: any text before the answer's `\\boxed{`)."""
    if emulated:
        thinking, _, closed = split_think(text, True)
        return bool(thinking) or not closed
    thinking, _, closed = split_think(text)
    has_block = THINK_OPEN in text or THINK_CLOSE in text
    return bool(thinking) if has_block and closed else has_block and not closed


def is_correct(text: str, gold, emulated: bool = False) -> bool:
    """leanthink's grader on the answer part (after `</think>`, or the whole text when there is none)."""
    from ..grading import extract_answer, grade

    if gold is None:
        return False
    _, answer, closed = split_think(text, emulated)
    pred = extract_answer(answer if closed else text)
    return grade(pred, str(gold))


# -- TRL reward functions ---------------------------------------------------------------------

REWARDS = ("correct", "l1-exact", "l1-max", "shorter-better", "think-prune", "kimi", "adapt-think")
_DEFAULTS = {
    "correct": {}, "l1-exact": {"alpha": 0.0003}, "l1-max": {"alpha": 0.0003, "delta": 0.5},
    "shorter-better": {"alpha": 1.0, "beta": 0.001}, "think-prune": {"cap": 256}, "kimi": {"weight": 1.0},
    "adapt-think": {"delta": 0.05},
}


def parse_reward_spec(spec: str) -> tuple[str, dict[str, float]]:
    """`name` or `name(key=value, ...)` -> (name, params with defaults); bad names/values -> ConfigError."""
    s = spec.strip()
    name, params = s, {}
    if "(" in s:
        if not s.endswith(")"):
            raise ConfigError(f"bad reward spec '{spec}': expected name(key=value, ...)")
        name, _, inner = s[:-1].partition("(")
        for part in filter(None, (p.strip() for p in inner.split(","))):
            k, eq, v = part.partition("=")
            if not eq:
                raise ConfigError(f"bad reward parameter '{part}' in '{spec}': expected key=value")
            try:
                params[k.strip()] = float(v)
            except ValueError:
                raise ConfigError(f"reward parameter {k.strip()} must be a number, got '{v.strip()}'") from None
    name = name.strip()
    if name not in _DEFAULTS:
        raise ConfigError(f"unknown reward '{name}'; choose from {', '.join(REWARDS)}")
    unknown = set(params) - set(_DEFAULTS[name])
    if unknown:
        raise ConfigError(f"reward '{name}' has no parameter {', '.join(sorted(unknown))} "
                          f"(it takes: {', '.join(_DEFAULTS[name]) or 'none'})")
    full = {**_DEFAULTS[name], **params}
    if "cap" in full and full["cap"] < 1:
        raise ConfigError(f"think-prune cap must be >= 1 token, got {full['cap']}")
    if any(v < 0 for k, v in full.items()):
        raise ConfigError(f"reward parameters must be >= 0, got {params}")
    return name, full


def _groups(prompts: Sequence) -> list[list[int]]:
    """Indices of completions that share a prompt (GRPO's group), in first-seen order."""
    by: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        by.setdefault(repr(p), []).append(i)
    return list(by.values())


def make_reward(spec: str, count: Callable[[str], int] | None = None, *, emulated: bool = False
                ) -> Callable[..., list[float]]:
    """A TRL reward function for `spec` (see `REWARDS`). `count(text)` gives token counts for the
    thinking part (and for the completion when TRL does not pass `completion_ids`); the default
    counts whitespace-separated words, enough for tests but not for training. `emulated`: the
    model's family thinks without tags (see `split_think`)."""
    name, p = parse_reward_spec(spec)
    count = count or (lambda t: len(t.split()))

    def reward(prompts, completions, gold=None, target_len=None, completion_ids=None, **_) -> list[float]:
        texts = [completion_text(c) for c in completions]
        golds = gold if gold is not None else [None] * len(texts)
        corr = [is_correct(t, g, emulated) for t, g in zip(texts, golds)]
        lens = [len(ids) for ids in completion_ids] if completion_ids is not None else [count(t) for t in texts]
        if name == "correct":
            return [correctness(c) for c in corr]
        if name in ("l1-exact", "l1-max"):
            if target_len is None:
                raise ConfigError(f"reward '{name}' needs a target_len column (rl adds it with --target-len)")
            if name == "l1-exact":
                return [l1_exact(c, n, int(t), p["alpha"]) for c, n, t in zip(corr, lens, target_len)]
            return [l1_max(c, n, int(t), p["alpha"], p["delta"]) for c, n, t in zip(corr, lens, target_len)]
        if name == "think-prune":
            out = []
            for t, c in zip(texts, corr):
                thinking, _, closed = split_think(t, emulated)
                out.append(think_prune(c, count(thinking), closed, int(p["cap"])))
            return out
        if name == "adapt-think":
            return [adapt_think(c, thought(t, emulated), p["delta"]) for t, c in zip(texts, corr)]
        out = [0.0] * len(texts)
        for idx in _groups(prompts):
            gc, gl = [corr[i] for i in idx], [lens[i] for i in idx]
            if name == "shorter-better":
                sol = shortest_correct_length(gc, gl)
                for i in idx:
                    out[i] = shorter_better(corr[i], lens[i], sol, p["alpha"], p["beta"])
            else:  # kimi: correctness plus the weighted group length term
                lo, hi = min(gl), max(gl)
                for i in idx:
                    out[i] = correctness(corr[i]) + p["weight"] * kimi_length(corr[i], lens[i], lo, hi)
        return out

    reward.__name__ = name.replace("-", "_")
    return reward
