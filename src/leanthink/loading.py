"""Model loaders: what a method may load besides the task's own backend.

Collaboration methods need a second model (`route`, `spec-reason`: `small_model`) or a
probe file (`probe-exit`: `probe`). They never load those themselves: they ask the
loader carried by their `Task` (`task.models.load(name)`, `task.models.probe(name)`), so
whoever builds the task decides what a name may resolve to.

* `LocalLoader` (the library, the CLI and the bench; `default_loader()`): the user is the
  operator, so a name is any model string or probe path. Loaded backends are cached in a
  small LRU (loading weights is slow; each llama.cpp instance holds its weights in memory).
* `RegisteredLoader` (the server): only names the operator registered at start; anything
  else is refused without being parsed, opened or contacted (see `leanthink.server`).

This module imports no method code, so that `leanthink.methods` can depend on it.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from typing import Mapping

from .backends import load_backend
from .backends.base import BaseBackend
from .errors import ConfigError
from .probe_file import LinearProbe, load_probe

#: What the default `small_model` of `route`/`spec-reason` means in the library and CLI.
#: On a server it is the extra model the operator registered under this name.
SMALL = "small"
DEFAULT_SMALL_MODEL = "qwen2.5-coder-0.5b"


class ModelLoader:
    """Resolves the model and probe names a method's parameters give."""

    def load(self, name: str) -> BaseBackend:  # pragma: no cover - interface
        """The backend for a model name (e.g. `small_model`)."""
        raise NotImplementedError

    def probe(self, name: str) -> LinearProbe:  # pragma: no cover - interface
        """The probe for a probe name (e.g. `probe-exit`'s `probe`)."""
        raise NotImplementedError


class LocalLoader(ModelLoader):
    """Any model string, any probe path: for a user on their own machine.

    `load("small")` is `DEFAULT_SMALL_MODEL`. The last `max_models` backends are kept; an
    evicted one is dropped (its memory is freed once no task uses it any more) and a
    backend that is still alive elsewhere is found again instead of loaded twice.
    """

    def __init__(self, max_models: int = 4):
        if max_models < 1:
            raise ConfigError(f"max_models must be >= 1, got {max_models}")
        self.max_models = max_models
        self.cache: OrderedDict[str, BaseBackend] = OrderedDict()
        self._alive: weakref.WeakValueDictionary[str, BaseBackend] = weakref.WeakValueDictionary()
        self._lock = threading.RLock()  # bench workers load the same small model at once

    def backend(self, model: str | None = None, *, quiet: bool = True) -> BaseBackend:
        """The backend of a model string (None: the default model), loaded once."""
        key = model or ""
        with self._lock:
            be = self.cache.get(key)
            if be is None:
                be = self._alive.get(key)
            if be is None:
                be = load_backend(model, quiet=quiet)
            self.cache[key] = be
            self.cache.move_to_end(key)
            try:
                self._alive[key] = be
            except TypeError:  # a backend type without weak references: the LRU alone
                pass
            while len(self.cache) > self.max_models:
                self.cache.popitem(last=False)
            return be

    def load(self, name: str) -> BaseBackend:
        if not isinstance(name, str) or not name.strip():
            raise ConfigError("the model name is empty")
        name = name.strip()
        return self.backend(DEFAULT_SMALL_MODEL if name == SMALL else name)

    def probe(self, name: str) -> LinearProbe:
        if not isinstance(name, str) or not name.strip():
            raise ConfigError("probe-exit needs probe=PATH (train one with `leanthink probe train`)")
        return load_probe(name.strip())


class RegisteredLoader(ModelLoader):
    """Only the models and probes registered by name (already loaded); nothing else.

    A refused name is not echoed and never reaches the filesystem or the network, so the
    answer is the same whatever the value points at."""

    def __init__(self, models: Mapping[str, BaseBackend] | None = None,
                 probes: Mapping[str, LinearProbe] | None = None):
        self.models = dict(models or {})
        self.probes = dict(probes or {})

    def load(self, name: str) -> BaseBackend:
        if isinstance(name, str) and name in self.models:
            return self.models[name]
        raise ConfigError(unknown_model_message(name, self.models))

    def probe(self, name: str) -> LinearProbe:
        if isinstance(name, str) and name in self.probes:
            return self.probes[name]
        raise ConfigError(unknown_probe_message(self.probes))


def unknown_model_message(name: object, registered) -> str:
    """Why a model name is refused on a server; names only the operator's names and flag."""
    known = ", ".join(sorted(registered))
    if name == SMALL:
        return (f"this server has no extra model '{SMALL}' (the default small_model of route and spec-reason); "
                f"the operator can add one with --extra-model {SMALL}=MODEL"
                + (f"; registered extra models: {known}" if known else "")
                + "; route also works with small_model=none (the served model answers first)")
    if known:
        return f"small_model must name an extra model of this server: {known}"
    return "this server has no extra models; the operator can add one with --extra-model NAME=MODEL"


def unknown_probe_message(registered) -> str:
    known = ", ".join(sorted(registered))
    if known:
        return f"probe must name a probe of this server: {known}"
    return "this server has no probes; the operator can add one with --probe NAME=PATH"


_DEFAULT: LocalLoader | None = None
_DEFAULT_LOCK = threading.Lock()


def default_loader() -> LocalLoader:
    """The process-wide library loader (shared by `solve`, the CLI and the bench)."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = LocalLoader()
        return _DEFAULT


__all__ = ["ModelLoader", "LocalLoader", "RegisteredLoader", "default_loader", "SMALL", "DEFAULT_SMALL_MODEL",
           "unknown_model_message", "unknown_probe_message"]
