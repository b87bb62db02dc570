"""Pure sequence layouts: LightThinker's attention mask and Coconut's curriculum.

Kept free of torch so the rules can be checked on hand-made sequences in fast tests; the
training code turns the results into tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

PROMPT, TEXT, GIST, PAD = "prompt", "text", "gist", "pad"


@dataclass(frozen=True)
class Pos:
    """One position of a LightThinker sequence: what it is and which segment it belongs to
    (segment 0 is the prompt; each reasoning step is a segment; the answer is the last)."""

    kind: str
    segment: int


def lightthinker_positions(prompt_len: int, segment_lens: list[int], n_gist: int,
                           answer_len: int) -> list[Pos]:
    """Prompt, then each step's text followed by `n_gist` gist tokens, then the answer."""
    out = [Pos(PROMPT, 0)] * prompt_len
    for s, n in enumerate(segment_lens, start=1):
        out += [Pos(TEXT, s)] * n + [Pos(GIST, s)] * n_gist
    out += [Pos(TEXT, len(segment_lens) + 1)] * answer_len
    return out


def may_attend(q: Pos, k: Pos) -> bool:
    """LightThinker's rule for a query at a later-or-equal position than the key: the prompt
    is always visible; an earlier segment is visible only through its gist tokens; the
    query's own segment is visible whole (causally). Padding sees only itself."""
    if q.kind == PAD or k.kind == PAD:
        return False
    if k.kind == PROMPT:
        return True
    if k.segment == q.segment:
        return True
    return k.kind == GIST and k.segment < q.segment


def lightthinker_mask(positions: list[Pos]) -> list[list[bool]]:
    """mask[i][j]: may position i attend to position j (j <= i). A padding row attends to
    itself only, so softmax never sees an empty row."""
    n = len(positions)
    mask = [[False] * n for _ in range(n)]
    for i, q in enumerate(positions):
        if q.kind == PAD:
            mask[i][i] = True
            continue
        for j in range(i + 1):
            mask[i][j] = may_attend(q, positions[j])
    return mask


def kept_after_compression(positions: list[Pos], segment: int) -> list[int]:
    """The positions LightThinker's inference keeps in the KV cache once `segment`'s gists are
    written: everything except that segment's text (and any earlier segment's text, already
    gone). What a later token may see under the training mask, by construction."""
    return [i for i, p in enumerate(positions)
            if p.kind != PAD and not (p.kind == TEXT and 1 <= p.segment <= segment)]


@dataclass(frozen=True)
class Stage:
    """What Coconut's stage k trains on: `n_latent` continuous thoughts replace the first
    `replaced` steps; the steps from `replaced` on stay as text."""

    index: int
    n_latent: int
    replaced: int

    def kept_steps(self, steps: list[str] | tuple[str, ...]) -> list[str]:
        return list(steps[self.replaced:])


def coconut_stage(k: int, n_steps: int, thoughts_per_step: int, max_stage: int) -> Stage:
    """Stage k (0 = the full chain of thought) replaces the first min(k, n_steps) steps with
    `thoughts_per_step` thoughts each. Past `max_stage` the last stage repeats."""
    if k < 0 or max_stage < 0 or thoughts_per_step < 1 or n_steps < 1:
        raise ValueError(f"bad curriculum: k={k}, n_steps={n_steps}, c={thoughts_per_step}, max_stage={max_stage}")
    k = min(k, max_stage)
    replaced = min(k, n_steps)
    return Stage(k, replaced * thoughts_per_step, replaced)


def stage_of_step(step: int, steps_per_stage: int, max_stage: int) -> int:
    """Which curriculum stage an optimizer step belongs to (the last stage absorbs the rest)."""
    return min(step // max(steps_per_stage, 1), max_stage)
