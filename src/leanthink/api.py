"""The library entry point: `solve(question, method=..., model=...)`."""

from __future__ import annotations

from typing import Any

from .backends import load_backend
from .backends.base import BaseBackend
from .errors import ConfigError
from .methods import Method, Task, get_method
from .result import Result

_BACKENDS: dict[str, BaseBackend] = {}


def get_backend(model: str | None = None, *, quiet: bool = False) -> BaseBackend:
    """Load a backend once per model string and reuse it (loading weights is slow)."""
    key = model or ""
    if key not in _BACKENDS:
        _BACKENDS[key] = load_backend(model, quiet=quiet)
    return _BACKENDS[key]


def resolve_method(method: str | Method, budget: int | None = None, **params: Any) -> Method:
    if isinstance(method, Method):
        if budget is not None or params:
            raise ConfigError("pass budget/params in the method spec when giving a Method instance")
        return method
    m = get_method(method, **params)
    if budget is not None:
        if isinstance(budget, bool) or not isinstance(budget, int) or budget <= 0:
            raise ConfigError(f"budget must be a positive integer number of tokens, got {budget!r}")
        target = getattr(m, "second", m)
        bp = type(target).budget_param
        if bp is None:
            raise ConfigError(f"method '{target.name}' has no token budget; drop --budget or pick e.g. 'budget' or 'think'")
        m = get_method(method, **{**params, bp: budget})
    return m


def solve(
    question: str,
    method: str | Method = "think",
    *,
    model: str | None = None,
    backend: BaseBackend | None = None,
    budget: int | None = None,
    seed: int = 0,
    temperature: float = 0.0,
    **params: Any,
) -> Result:
    """Answer one question with an efficiency method.

    >>> r = solve("What is 17 * 3?", method="think")      # doctest: +SKIP
    >>> r.answer, r.usage.total                             # doctest: +SKIP
    """
    m = resolve_method(method, budget, **params)
    be = backend or get_backend(model)
    task = Task.create(question, be, seed=seed, temperature=temperature)
    return m(task)
