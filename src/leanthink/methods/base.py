"""Method registry: every efficiency method is a small class with declared parameters.

A method gets a `Task` (question + backend + model family + seed) and returns a
`Result`. Parameters are a pydantic model, so bad values fail with a clear message
before any token is generated, and `leanthink methods` can list them.

Method specs are strings: `think`, `budget(max_thinking=256)`, and compositions of a
prompt-level method with another one: `chain-of-draft+deer`.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, NamedTuple

from pydantic import BaseModel, ConfigDict, ValidationError

from ..backends.base import BaseBackend
from ..errors import ConfigError
from ..loading import ModelLoader, default_loader
from ..reasoning import Family, family_for
from ..result import Result, Usage


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass
class PromptStyle:
    """What prompt-level methods change: extra instructions, never the question itself."""

    system_extra: str = ""
    user_suffix: str = ""


@dataclass
class Task:
    question: str
    backend: BaseBackend
    family: Family
    seed: int = 0
    temperature: float = 0.0
    style: PromptStyle = field(default_factory=PromptStyle)
    #: Usage spent before the main method ran (e.g. a TALE budget estimate).
    pre_usage: Usage = field(default_factory=Usage)
    pre_trace: list = field(default_factory=list)
    #: Where a method gets any other model or probe it names (`small_model`, `probe`):
    #: `task.models.load(name)`, `task.models.probe(name)`. Whoever builds the task decides
    #: what a name may be: the library's loader takes any model string or path, the
    #: server's only what its operator registered (see `leanthink.loading`).
    models: ModelLoader = field(default_factory=default_loader)
    #: `boxed` (the grading form) or `natural` (what a person reads): how the answer is written
    #: when thinking ends; the chain itself is the same (see `leanthink.readable`).
    answer_format: str = "boxed"

    @classmethod
    def create(cls, question: str, backend: BaseBackend, *, seed: int = 0, temperature: float = 0.0,
               models: ModelLoader | None = None, answer_format: str = "boxed") -> "Task":
        from ..readable import check_answer_format

        if not isinstance(question, str):
            raise ConfigError(f"the question must be a string, got {type(question).__name__}")
        if not question.strip():
            raise ConfigError("the question is empty")
        if temperature < 0:
            raise ConfigError(f"temperature must be >= 0, got {temperature}")
        check_answer_format(answer_format)
        fam = family_for(backend.model_id, backend.family_override)
        return cls(question.strip(), backend, fam, seed, temperature, models=models or default_loader(),
                   answer_format=answer_format)


class Resource(NamedTuple):
    """Something a method will ask `task.models` for: which parameter names it, what kind
    (`model` or `probe`) and the name."""

    param: str
    kind: str
    name: str


class Method:
    name: ClassVar[str] = ""
    kind: ClassVar[str] = "decoding"
    """`baseline`, `prompt` (changes only the prompt), `decoding` (controls one chain),
    `sampling` (several chains) or `collab` (several models)."""
    summary: ClassVar[str] = ""
    reference: ClassVar[str] = ""
    Params: ClassVar[type[BaseModel]] = NoParams
    needs: ClassVar[frozenset[str]] = frozenset()
    """Backend capabilities the method cannot work without."""
    budget_param: ClassVar[str | None] = None
    """Which parameter `--budget N` sets, if the method has a token budget."""

    def __init__(self, **params: Any):
        try:
            self.params = self.Params(**params)
        except ValidationError as exc:
            raise ConfigError(f"bad parameters for method '{self.name}': {_pretty(exc)}") from None

    @property
    def spec(self) -> str:
        """Canonical string: name plus the parameters that differ from the defaults."""
        changed = {k: v for k, v in self.params.model_dump().items() if v != self.Params.model_fields[k].default}
        if not changed:
            return self.name
        return f"{self.name}({','.join(f'{k}={v}' for k, v in changed.items())})"

    def param_dict(self) -> dict[str, Any]:
        return self.params.model_dump()

    def __repr__(self) -> str:
        """`<Method think(max_thinking=4096,max_answer=512)>`: every parameter, defaults included
        (`spec` is the short form, with only the parameters that differ from the defaults)."""
        return f"<Method {self._full_spec()}>"

    def _full_spec(self) -> str:
        params = self.param_dict()
        return f"{self.name}({','.join(f'{k}={v}' for k, v in params.items())})" if params else self.name

    def check(self, backend: BaseBackend) -> None:
        backend.require(set(self.needs), f"method '{self.name}'")

    # -- the method a budget applies to ---------------------------------------------
    def budget_target(self) -> "Method":
        """The method that runs the chain(s), and so owns the token budget and answer caps:
        the method itself; a composition's second method (its prompt-level first method only
        shapes the prompt). `budget_target().budget_param` is the parameter `--budget` sets."""
        return self

    @property
    def one_chain(self) -> bool:
        """Runs a single chain (not `sampling` or `collab`): its text can stream as it is
        produced, and it can be a sampling method's inner method."""
        return self.budget_target().kind not in ("sampling", "collab")

    def with_target_params(self, **changes: Any) -> "Method":
        """A copy with parameters of `budget_target()` changed (validated: ConfigError if bad);
        a composition keeps its prompt-level method as is."""
        return with_params(self, **changes)

    def with_budget(self, tokens: int, *, keep_explicit: bool = False) -> "Method":
        """A copy whose token budget is `tokens` (ConfigError if the method has none).
        `keep_explicit`: a budget the spec set itself wins, so `sc(inner=budget(max_thinking=9))`
        keeps 9 for its samples whatever the sampling method's own cap."""
        target = self.budget_target()
        bp = target.budget_param
        if bp is None:
            raise ConfigError(f"method '{target.name}' has no token budget")
        if keep_explicit and bp in target.params.model_fields_set:
            return self
        return self.with_target_params(**{bp: tokens})

    def resources(self) -> list[Resource]:
        """The models and probes this method will load through `task.models` (none by
        default), so that a server can refuse unknown names before running anything."""
        return []

    def prepare(self, task: Task) -> Task:
        """Prompt-level methods override this; others leave the task alone."""
        return task

    def run(self, task: Task) -> Result:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, task: Task) -> Result:
        self.check(task.backend)
        t0 = time.perf_counter()
        res = self.run(self.prepare(task))
        res.latency_s = time.perf_counter() - t0
        return res


def _pretty(exc: ValidationError) -> str:
    parts = []
    for e in exc.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "params"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown parameter"
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


REGISTRY: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    if not cls.name or cls.name in REGISTRY:
        raise RuntimeError(f"method name missing or registered twice: {cls.name!r}")
    cls.Params.model_config["extra"] = "forbid"
    cls.Params.model_rebuild(force=True)
    REGISTRY[cls.name] = cls
    return cls


class Composed(Method):
    """`prompt+decoding`: the prompt method shapes the prompt, the second one runs it."""

    kind = "composed"

    def __init__(self, first: Method, second: Method):
        self.first, self.second = first, second
        self.params = NoParams()
        self.name = f"{first.name}+{second.name}"  # type: ignore[misc]

    @property
    def spec(self) -> str:
        return f"{self.first.spec}+{self.second.spec}"

    def param_dict(self) -> dict[str, Any]:
        return {self.first.name: self.first.param_dict(), self.second.name: self.second.param_dict()}

    def _full_spec(self) -> str:
        return f"{self.first._full_spec()}+{self.second._full_spec()}"

    def check(self, backend: BaseBackend) -> None:
        self.first.check(backend)
        self.second.check(backend)

    def resources(self) -> list[Resource]:
        return self.first.resources() + self.second.resources()

    def budget_target(self) -> Method:
        return self.second

    def with_target_params(self, **changes: Any) -> Method:
        return Composed(self.first, with_params(self.second, **changes))

    def prepare(self, task: Task) -> Task:
        return self.second.prepare(self.first.prepare(task))

    def run(self, task: Task) -> Result:
        res = self.second.run(task)
        res.method, res.params = self.spec, self.param_dict()
        return res


_SPEC_RE = re.compile(r"^\s*([a-z0-9@_\-]+)\s*(?:\((.*)\))?\s*$", re.IGNORECASE)


def _parse_value(v: str) -> Any:
    v = v.strip()
    low = v.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for conv in (int, float):
        try:
            return conv(v)
        except ValueError:
            pass
    return v.strip("'\"")


def _split_top(s: str, sep: str) -> list[str]:
    out, depth, cur = [], 0, ""
    for ch in s:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == sep and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return out


MAX_SPEC_CHARS = 1000
MAX_SPEC_DEPTH = 8
"""Bounds on a spec string: a spec can nest specs (`sc(inner=budget(...))`) and the server
parses specs that clients send, so a huge or deeply nested one must be a ConfigError, not
a RecursionError deep in the parser."""


def _check_spec_size(spec: str) -> None:
    if len(spec) > MAX_SPEC_CHARS:
        raise ConfigError(f"method spec is {len(spec)} characters long; the limit is {MAX_SPEC_CHARS}")
    depth = deepest = 0
    for ch in spec:
        if ch == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif ch == ")":
            depth -= 1
    if deepest > MAX_SPEC_DEPTH:
        raise ConfigError(f"method spec nests parentheses {deepest} deep; the limit is {MAX_SPEC_DEPTH}")


def get_method(spec: str, **overrides: Any) -> Method:
    """Build a method from a spec string like `budget(max_thinking=256)` or `cod+deer`.

    `overrides` are applied to the last (decoding) method of a composition.
    """
    from . import ensure_loaded

    ensure_loaded()
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError("method name is empty")
    _check_spec_size(spec)
    parts = [p for p in _split_top(spec, "+")]
    if len(parts) > 2:
        raise ConfigError(f"method '{spec}': at most two methods can be combined (prompt-level + another)")
    methods = []
    for i, part in enumerate(parts):
        m = _SPEC_RE.match(part)
        if not m:
            raise ConfigError(f"cannot parse method spec '{part}'; expected NAME or NAME(key=value,...)")
        name, args = m.group(1).lower(), m.group(2)
        if name not in REGISTRY:
            close = [n for n in REGISTRY if n.startswith(name[:3])]
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"unknown method '{name}'.{hint} Known methods: {', '.join(sorted(REGISTRY))}")
        kwargs: dict[str, Any] = {}
        if args and args.strip():
            for kv in _split_top(args, ","):
                if "=" not in kv:
                    raise ConfigError(f"method '{name}': parameter '{kv.strip()}' must be key=value")
                k, v = kv.split("=", 1)
                kwargs[k.strip()] = _parse_value(v)
        if i == len(parts) - 1:
            kwargs.update({k: v for k, v in overrides.items() if v is not None})
        methods.append(REGISTRY[name](**kwargs))
    if len(methods) == 2:
        if methods[0].kind != "prompt":
            raise ConfigError(
                f"in '{spec}', the first method must be prompt-level (e.g. chain-of-draft), "
                f"but '{methods[0].name}' is {methods[0].kind}"
            )
        return Composed(methods[0], methods[1])
    return methods[0]


def with_params(method: Method, **changes: Any) -> Method:
    """A copy of `method` with some parameters changed (validated)."""
    return type(method)(**{**method.param_dict(), **changes})


__all__ = ["Method", "Task", "PromptStyle", "Resource", "register", "get_method", "REGISTRY", "Composed", "with_params",
           "replace"]
