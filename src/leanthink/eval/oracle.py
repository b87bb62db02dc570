"""The physical limit of early exit: the "pearl" point of each baseline chain.

For a finished `think` chain we cut the reasoning at step boundaries (line breaks,
"Wait", "Alternatively", ...) from the start, force the answer at each cut, and stop at
the first cut whose forced answer is already correct. No early-exit method that keeps
the model unchanged can stop earlier with the right answer, so its token count is the
floor every exit method is judged against.
"""

from __future__ import annotations

import re
from typing import Any

from ..grading import grade
from ..methods.base import Task
from ..backends.continuation import Continuation
from ..methods.engine import Chain

DEFAULT_CUES = ("Wait", "Alternatively", "Hmm", "But wait", "Let me check", "Double-check", "Verify")


def boundaries(reasoning: str, *, cues: tuple[str, ...] = DEFAULT_CUES, every_chars: int | None = None,
               max_probes: int = 40) -> list[int]:
    """Character offsets at which to cut: 0, each line end, before each cue word, and the end."""
    cuts = {0, len(reasoning)}
    for m in re.finditer(r"\n", reasoning):
        cuts.add(m.start())
    for cue in cues:
        for m in re.finditer(re.escape(cue), reasoning):
            cuts.add(m.start())
    if every_chars:
        cuts.update(range(every_chars, len(reasoning), every_chars))
    out = sorted(c for c in cuts if c == 0 or reasoning[:c].strip())
    out = sorted(set(out))
    if len(out) > max_probes:  # keep the spread, always keep the start and the end
        idx = {round(i * (len(out) - 1) / (max_probes - 1)) for i in range(max_probes)}
        out = [out[i] for i in sorted(idx)]
    return out


def find_pearl(record: dict[str, Any], task: Task, *, max_probes: int = 40) -> dict[str, Any]:
    """Probe one baseline record; returns the oracle record stored next to it.

    On engines that take a `Continuation` (`exact_continuation`) the reasoning is given as one
    text part per stretch between cuts: each stretch is evaluated once, as its own batch, and
    every later cut reuses it, so a probe's numbers depend only on the record, never on what
    ran before. Otherwise the probe is the text `prompt + reasoning[:cut]`."""
    chain = Chain(task)
    reasoning, prompt = record["reasoning"], record["prompt"]
    base_total = record["usage"]["total"]
    trajectory, probe_tokens, pearl = [], 0, None
    seen: set[int] = set()
    exact = task.backend.exact_continuation
    branch, done = Continuation.of(prompt), 0
    for off in boundaries(reasoning, max_probes=max_probes):
        prefix = reasoning[:off]
        cut = len(prefix.rstrip())
        if cut in seen:  # a cue right after a line break: same cut twice
            continue
        seen.add(cut)
        if exact and cut >= done:  # cuts only grow
            branch, done = branch.forced(reasoning[done:cut]), cut
            p = chain.probe_prefix(branch)
        else:
            p = chain.probe(prompt, prefix)
        probe_tokens += p.tokens
        thinking_at = task.backend.count_tokens(prefix.rstrip())
        ok = grade(p.answer, record["gold"], record.get("kind", "math"))
        trajectory.append({"offset": off, "thinking_tokens": thinking_at, "answer": p.answer, "correct": ok})
        if ok:
            pearl = {"offset": off, "thinking_tokens": thinking_at, "tokens": thinking_at + p.tokens, "answer": p.answer}
            break
    return {
        "item_id": record["item_id"],
        "seed": record["seed"],
        "thinking_tokens": record["usage"]["thinking"],
        "baseline_tokens": base_total,
        "pearl_tokens": pearl["tokens"] if pearl else None,
        "pearl_thinking_tokens": pearl["thinking_tokens"] if pearl else None,
        "pearl_offset": pearl["offset"] if pearl else None,
        "oracle_tokens": min(pearl["tokens"], base_total) if pearl else base_total,
        "probes": len(trajectory),
        "probe_tokens": probe_tokens,
        "trajectory": trajectory,
    }

