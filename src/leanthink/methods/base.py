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
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from ..backends.base import BaseBackend
from ..errors import ConfigError
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

    @classmethod
    def create(cls, question: str, backend: BaseBackend, *, seed: int = 0, temperature: float = 0.0) -> "Task":
        if not isinstance(question, str) or not question.strip():
            raise ConfigError("the question is empty")
        if temperature < 0:
            raise ConfigError(f"temperature must be >= 0, got {temperature}")
        fam = family_for(backend.model_id, getattr(backend, "family_override", None))
        return cls(question.strip(), backend, fam, seed, temperature)


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

    def check(self, backend: BaseBackend) -> None:
        backend.require(set(self.needs), f"method '{self.name}'")

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

    def check(self, backend: BaseBackend) -> None:
        self.first.check(backend)
        self.second.check(backend)

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


def get_method(spec: str, **overrides: Any) -> Method:
    """Build a method from a spec string like `budget(max_thinking=256)` or `cod+deer`.

    `overrides` are applied to the last (decoding) method of a composition.
    """
    from . import ensure_loaded

    ensure_loaded()
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError("method name is empty")
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


__all__ = ["Method", "Task", "PromptStyle", "register", "get_method", "REGISTRY", "Composed", "with_params", "replace"]
