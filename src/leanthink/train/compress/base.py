"""Compressor registry: each compressor is a small class with declared parameters, like methods.

Specs are strings parsed with the methods' own grammar (`methods.base`):
`shortest`, `shortest(weights=o1pruner,alpha=2)`, `tokenskip(ratio=0.6)`. Bad names and
values fail as one-line `ConfigError`s before any model is loaded.

A compressor turns one item's group of collected chains into candidate examples (or drop
reasons). The runner (`runner.py`) re-verifies every candidate against the gold answer,
formats it (`train.dataset`) and counts what was kept and dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from ...errors import ConfigError
from ...methods.base import _SPEC_RE, _check_spec_size, _parse_value, _pretty, _split_top


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass
class ChainRec:
    """One collected chain (a row of the collect store), reduced to what compressors use."""

    item_id: str
    seed: int
    question: str
    gold: str
    kind: str
    reasoning: str
    answer_text: str
    answer: str | None
    correct: bool
    thinking_tokens: int
    answer_tokens: int
    finish_reason: str
    prompt: str = ""
    """The rendered prompt the chain was generated from (the scoring context)."""

    @property
    def natural(self) -> bool:
        """The model ended its reasoning itself (not cut by the thinking cap or forced)."""
        return self.finish_reason == "stop"

    @classmethod
    def from_record(cls, r: dict) -> "ChainRec":
        u = r.get("usage") or {}
        return cls(item_id=r["item_id"], seed=int(r["seed"]), question=r["question"], gold=str(r["gold"]),
                   kind=r.get("kind", "math"), reasoning=r.get("reasoning") or "", answer_text=r.get("answer_text") or "",
                   answer=r.get("answer"), correct=bool(r.get("correct")), thinking_tokens=int(u.get("thinking", 0)),
                   answer_tokens=int(u.get("answer", 0)), finish_reason=r.get("finish_reason") or "",
                   prompt=r.get("prompt") or "")


@dataclass
class Group:
    """The k chains of one item, plus the item's reference solution when the dataset has one."""

    item_id: str
    question: str
    gold: str
    kind: str
    chains: list[ChainRec]
    reference: str | None = None

    @property
    def accuracy(self) -> float:
        return sum(c.correct for c in self.chains) / len(self.chains) if self.chains else 0.0

    def correct(self, include_cut: bool = False) -> list[ChainRec]:
        return [c for c in self.chains if c.correct and (include_cut or c.natural)]


@dataclass
class Candidate:
    """A proposed training example, before verification."""

    source: ChainRec
    reasoning: str
    answer_text: str
    orig_tokens: int
    tokens: int
    weight: float = 1.0
    user_suffix: str = ""
    pruned: bool = False
    """Built by deleting text from the source chain: the answer text must be the source's, verbatim."""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Drop:
    item_id: str
    reason: str
    seed: int | None = None


@dataclass
class Context:
    """What a compressor may use. Models load lazily, only for compressors that need them."""

    family: Any
    scorer_factory: Callable[[], Any] | None = None
    backend_factory: Callable[[], Any] | None = None
    _scorer: Any = None
    _backend: Any = None

    @property
    def scorer(self):
        if self._scorer is None:
            if self.scorer_factory is None:
                raise ConfigError("this compressor needs a scoring model (--scorer MODEL)")
            self._scorer = self.scorer_factory()
        return self._scorer

    @property
    def backend(self):
        if self._backend is None:
            if self.backend_factory is None:
                raise ConfigError("this compressor needs a generation model (--model MODEL)")
            self._backend = self.backend_factory()
        return self._backend


class Compressor:
    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    reference: ClassVar[str] = ""
    Params: ClassVar[type[BaseModel]] = NoParams
    needs: ClassVar[frozenset[str]] = frozenset()
    """`scorer` (token log-probabilities) and/or `backend` (generation)."""
    always_shown: ClassVar[tuple[str, ...]] = ()
    """Parameters the spec names even at their default (a ratio is part of what a dataset is)."""

    def __init__(self, **params: Any):
        try:
            self.params = self.Params(**params)
        except ValidationError as exc:
            raise ConfigError(f"bad parameters for compressor '{self.name}': {_pretty(exc)}") from None

    @property
    def spec(self) -> str:
        changed = {k: v for k, v in self.params.model_dump().items()
                   if v != self.Params.model_fields[k].default or k in self.always_shown}
        if not changed:
            return self.name
        return f"{self.name}({','.join(f'{k}={v}' for k, v in changed.items())})"

    @property
    def importance(self) -> str | None:
        """What ranked the removed text (recorded in every example's meta), if anything did."""
        return None

    def user_suffix(self) -> str:
        """Text appended to the user turn of every example (TokenSkip's ratio condition), if any."""
        return ""

    def apply(self, group: Group, ctx: Context, *, include_cut: bool = False) -> list[Candidate | Drop]:
        raise NotImplementedError  # pragma: no cover - abstract

    def finalize(self, examples: list[dict]) -> list[dict]:
        """Dataset-level post-processing (e.g. weight normalisation); identity by default."""
        return examples


COMPRESSORS: dict[str, type[Compressor]] = {}


def register(cls: type[Compressor]) -> type[Compressor]:
    if not cls.name or cls.name in COMPRESSORS:
        raise RuntimeError(f"compressor name missing or registered twice: {cls.name!r}")
    cls.Params.model_config["extra"] = "forbid"
    cls.Params.model_rebuild(force=True)
    COMPRESSORS[cls.name] = cls
    return cls


def get_compressor(spec: str) -> Compressor:
    """Build a compressor from `NAME` or `NAME(key=value,...)`."""
    from . import ensure_loaded

    ensure_loaded()
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"compressor name is empty; known: {', '.join(sorted(COMPRESSORS))}")
    _check_spec_size(spec)
    m = _SPEC_RE.match(spec)
    if not m:
        raise ConfigError(f"cannot parse compressor spec '{spec}'; expected NAME or NAME(key=value,...)")
    name, args = m.group(1).lower(), m.group(2)
    if name not in COMPRESSORS:
        raise ConfigError(f"unknown compressor '{name}'. Known compressors: {', '.join(sorted(COMPRESSORS))}")
    kwargs: dict[str, Any] = {}
    if args and args.strip():
        for kv in _split_top(args, ","):
            if "=" not in kv:
                raise ConfigError(f"compressor '{name}': parameter '{kv.strip()}' must be key=value")
            k, v = kv.split("=", 1)
            kwargs[k.strip()] = _parse_value(v)
    return COMPRESSORS[name](**kwargs)


def pick_chains(group: Group, select: str, include_cut: bool) -> list[ChainRec]:
    """The correct chains a per-chain compressor works on: all of them, or the shortest."""
    good = group.correct(include_cut)
    if select == "shortest" and good:
        return [min(good, key=lambda c: (c.thinking_tokens, c.seed))]
    return good


def no_chain_drop(group: Group, include_cut: bool) -> Drop:
    """Why an item yields nothing: no correct chain at all, or only capped ones."""
    if any(c.correct for c in group.chains) and not include_cut:
        return Drop(group.item_id, "only_cut_chains_correct")
    return Drop(group.item_id, "no_correct_chain")
