"""`tokenskip(ratio=γ)`: drop the least important tokens of the reasoning until γ of them remain.

TokenSkip (Xia et al. 2025) ranks tokens with LLMLingua-2 and keeps the top γ, in order,
then fine-tunes with γ in the prompt so that the compression is chosen at inference. Here:
  * importance=self-information (default, offline): the scoring model's own surprisal
    -log p(x_t | x_<t) of each reasoning token (Selective Context). Tokens are grouped into
    words (a word starts at a whitespace-led token) and a word's importance is the mean
    surprisal of its tokens, so that words are dropped whole, never half.
  * importance=llmlingua2: LLMLingua-2's token classifier (needs the `llmlingua` package and
    its hub weights), with digits and newlines forced kept.
Numbers are never dropped; with `protect=numbers+ops` (default) neither are the operators
= + - * / × ÷ % and the math delimiters \\( \\) \\[ \\] $ that hold equations together;
newlines are kept (they delimit the steps), the answer text after the reasoning is kept
verbatim, and the order of what remains is the original order. Protected words can make γ
unreachable: the achieved ratio (recorded per example) is then above γ.

With `ratio_prompt=true` the user turn ends with `Compression ratio: γ` (`dataset.TOKENSKIP_SUFFIX`).
With `mix=0.5/0.7/1.0` each chain gets one γ from the list (a stable hash of item and seed picks
it), as TokenSkip trains one model on several ratios so that γ can be chosen at inference; the
cost is one pruned copy per chain, not one per ratio.
"""

from __future__ import annotations

import math
import re
import zlib
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from ...errors import ConfigError
from ..dataset import ratio_suffix
from .base import Candidate, Compressor, Context, Drop, Group, no_chain_drop, pick_chains, register

_OPS = set("=+-*/×÷%")
_MATH_DELIMS = ("\\(", "\\)", "\\[", "\\]", "$")


def group_units(pieces: list[bytes]) -> list[list[int]]:
    """Token indices grouped into words: a new word starts at a token that begins with
    whitespace; a token made only of whitespace containing a newline is a unit of its own."""
    units: list[list[int]] = []
    prev_newline = True
    for i, p in enumerate(pieces):
        is_nl = bool(p) and not p.strip() and b"\n" in p
        if is_nl or prev_newline or p[:1].isspace() or not units:
            units.append([i])
        else:
            units[-1].append(i)
        prev_newline = is_nl
    return units


def unit_protected(text: str, protect: str) -> bool:
    if not text.strip():
        return "\n" in text
    if any(ch.isdigit() for ch in text):
        return True
    return protect == "numbers+ops" and (any(ch in _OPS for ch in text) or any(d in text for d in _MATH_DELIMS))


def prune_tokens(pieces: list[bytes], surprisal: list[float], ratio: float, protect: str = "numbers") -> tuple[str, int]:
    """Keep about `ratio` of the tokens: drop whole words with the lowest mean surprisal, never a
    protected one. Returns (kept text, tokens kept)."""
    if len(pieces) != len(surprisal):
        raise ValueError("one surprisal value per token is needed")
    n = len(pieces)
    target = math.ceil(ratio * n - 1e-9)
    units = group_units(pieces)
    text_of = [b"".join(pieces[i] for i in u).decode("utf-8", errors="replace") for u in units]
    droppable = [j for j, u in enumerate(units) if not unit_protected(text_of[j], protect)]
    droppable.sort(key=lambda j: (sum(surprisal[i] for i in units[j]) / len(units[j]), -j))
    kept = n
    dropped: set[int] = set()
    for j in droppable:
        if kept <= target:
            break
        dropped.add(j)
        kept -= len(units[j])
    out: list[bytes] = []
    line_start, gap = True, False  # at the start of a line; a word right before was dropped
    for j, u in enumerate(units):
        if j in dropped:
            gap = True
            continue
        chunk = b"".join(pieces[i] for i in u)
        if line_start and gap:  # the line's first words were dropped: no stray indentation
            chunk = chunk.lstrip(b" \t")
        out.append(chunk)
        line_start = bool(chunk) and not chunk.strip() and b"\n" in chunk
        gap = False
    return tidy(b"".join(out).decode("utf-8", errors="replace")), kept


def tidy(text: str) -> str:
    """Whitespace left behind by removed words: no run of spaces, no space before a newline,
    no empty line where a whole line was removed."""
    text = re.sub(r"[ \t]+\n", "\n", text)
    text = re.sub(r"(?<=\S)[ \t]{2,}", " ", text)
    text = re.sub(r"\n{3,}", "\n\n", text)  # a line whose words all went
    return text.strip()


class TokenSkipParams(BaseModel):
    ratio: float = Field(0.6, gt=0, le=1, description="Target fraction of reasoning tokens kept, γ in (0, 1].")
    importance: Literal["self-information", "llmlingua2"] = Field(
        "self-information", description="Token importance: the scoring model's surprisal, or LLMLingua-2 (optional package).")
    protect: Literal["numbers", "numbers+ops"] = Field(
        "numbers+ops", description="Never dropped besides newlines: numbers, or numbers plus operators and math delimiters.")
    ratio_prompt: bool = Field(True, description="Append `Compression ratio: γ` to the user turn (TokenSkip's condition).")
    select: Literal["all", "shortest"] = Field("all", description="Compress every correct chain, or only the shortest.")
    mix: str = Field("", description="Several ratios, e.g. 0.5/0.7/1.0: each chain gets one (by a stable hash); overrides ratio.")

    @field_validator("mix")
    @classmethod
    def _check_mix(cls, v: str) -> str:
        mix_ratios(v)
        return v


def mix_ratios(mix: str) -> list[float]:
    """`0.5/0.7/1.0` -> [0.5, 0.7, 1.0]; each must be in (0, 1]."""
    if not str(mix).strip():
        return []
    out = []
    for part in str(mix).split("/"):
        try:
            r = float(part)
        except ValueError:
            raise ValueError(f"mix must be ratios separated by '/', e.g. 0.5/0.7/1.0; got '{mix}'") from None
        if not 0 < r <= 1:
            raise ValueError(f"every ratio in mix must be in (0, 1]; got {r:g}")
        out.append(r)
    return out


def chain_ratio(item_id: str, seed: int, ratios: list[float]) -> float:
    """The ratio a chain gets under `mix`: stable across runs and resumes (crc32 of item and seed)."""
    return ratios[zlib.crc32(f"{item_id}:{seed}".encode()) % len(ratios)]


@register
class TokenSkip(Compressor):
    name = "tokenskip"
    summary = "Token pruning to a target ratio γ by importance (self-information or LLMLingua-2), ratio in the prompt."
    reference = "Xia et al. 2025, TokenSkip: Controllable Chain-of-Thought Compression in LLMs"
    Params = TokenSkipParams
    needs = frozenset({"scorer"})
    always_shown = ("ratio",)

    def __init__(self, **params):
        super().__init__(**params)
        if self.params.importance == "llmlingua2":
            self.needs = frozenset()
        self._lingua = None

    @property
    def importance(self) -> str:
        return self.params.importance

    @property
    def spec(self) -> str:
        """With `mix`, `ratio` is unused: the spec names the ratios that were applied, not the default."""
        if not self.params.mix:
            return super().spec
        fields = self.Params.model_fields
        changed = {k: v for k, v in self.params.model_dump().items() if k != "ratio" and v != fields[k].default}
        return f"{self.name}({','.join(f'{k}={v}' for k, v in changed.items())})"

    def user_suffix(self, ratio: float | None = None) -> str:
        """The suffix for one γ; without one, the suffix every example gets (each of `mix`'s, joined by ' | ')."""
        if not self.params.ratio_prompt:
            return ""
        if ratio is None and self.params.mix:
            return " | ".join(ratio_suffix(r) for r in mix_ratios(self.params.mix))
        return ratio_suffix(self.params.ratio if ratio is None else ratio)

    def apply(self, group: Group, ctx: Context, *, include_cut: bool = False) -> list[Candidate | Drop]:
        chains = pick_chains(group, self.params.select, include_cut)
        if not chains:
            return [no_chain_drop(group, include_cut)]
        out: list[Candidate | Drop] = []
        mix = mix_ratios(self.params.mix)
        for c in chains:
            ratio = chain_ratio(c.item_id, c.seed, mix) if mix else self.params.ratio
            if not c.reasoning.strip():
                out.append(Drop(c.item_id, "empty_reasoning", c.seed))
                continue
            if self.params.importance == "llmlingua2":
                text = self._llmlingua(c.reasoning, ratio)
                count = ctx.scorer.count_tokens if ctx.scorer_factory else _approx_tokens
                orig, kept = count(c.reasoning), count(text)
            else:
                pieces, lps = ctx.scorer.token_logprobs(c.prompt, c.reasoning)
                text, _ = prune_tokens(pieces, [-x for x in lps], ratio, self.params.protect)
                orig, kept = ctx.scorer.count_tokens(c.reasoning), ctx.scorer.count_tokens(text)
            out.append(Candidate(source=c, reasoning=text, answer_text=c.answer_text, orig_tokens=orig, tokens=kept,
                                 user_suffix=self.user_suffix(ratio), pruned=True, meta={"target_ratio": ratio}))
        return out

    def _llmlingua(self, text: str, ratio: float) -> str:
        if self._lingua is None:
            try:
                from llmlingua import PromptCompressor  # type: ignore[import-not-found]
            except ImportError:
                raise ConfigError("importance=llmlingua2 needs the optional 'llmlingua' package (pip install -e \".[llmlingua]\") "
                                  "and its hub weights; the offline default is importance=self-information") from None
            try:
                self._lingua = PromptCompressor(model_name="microsoft/llmlingua-2-xlm-roberta-large-meetingbank",
                                                use_llmlingua2=True, device_map="cpu")
            except Exception as exc:  # hub unreachable, weights missing: the user's to fix
                raise ConfigError(f"cannot load LLMLingua-2 weights: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
        res = self._lingua.compress_prompt(text, rate=ratio, force_tokens=["\n"], force_reserve_digit=True,
                                           drop_consecutive=True)
        return tidy(res["compressed_prompt"])


def _approx_tokens(text: str) -> int:
    return len(re.findall(r"\w+|[^\w\s]", text))
