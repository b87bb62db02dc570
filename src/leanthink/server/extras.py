"""The operator's extra models and probes: loaded once when the server starts.

Methods such as `route`/`spec-reason` (a second model) and `probe-exit` (a probe) name
what they load in their parameters. On a server those names come from clients, so they
may only be names the operator registered (`--extra-model NAME=MODEL`, `--probe
NAME=PATH`): everything is loaded here, at start, and requests pick among the loaded
objects by name (`RegisteredLoader`). No request makes the server parse a model string,
open a file or contact a host, and memory does not grow with the requests.
"""

from __future__ import annotations

import logging

from ..backends import load_backend
from ..backends.base import BaseBackend
from ..errors import ConfigError
from ..loading import RegisteredLoader
from ..probe_file import load_probe
from .config import ServerConfig

log = logging.getLogger("leanthink.server")


def load_extras(config: ServerConfig, main: BaseBackend | None = None) -> RegisteredLoader:
    """Load every registered extra model and probe (blocking: call it off the event loop).
    An extra model with the same model string as the served one shares its backend."""
    backends: dict[str, BaseBackend] = {}
    if main is not None:
        backends[config.model] = main
    models: dict[str, BaseBackend] = {}
    try:
        for name, model in config.extra_models.items():
            if model not in backends:
                try:
                    backends[model] = load_backend(model, quiet=True)
                except ConfigError as exc:
                    raise ConfigError(f"extra model '{name}': {exc}") from None
            models[name] = backends[model]
            log.info("extra model '%s': %s (%s)", name, models[name].model_id, models[name].name)
        probes = {}
        for name, path in config.probes.items():
            try:
                probes[name] = load_probe(path)
            except ConfigError as exc:
                raise ConfigError(f"probe '{name}': {exc}") from None
            log.info("probe '%s': %d features, trained on %s", name, probes[name].dim, probes[name].model_id or "?")
    except BaseException:  # the server will not start: free what was loaded
        close_extras(RegisteredLoader({m: be for m, be in backends.items()}), main)
        raise
    return RegisteredLoader(models, probes)


def close_extras(extras: RegisteredLoader, main: BaseBackend | None = None) -> None:
    """Free the extra models (not the served one, which an extra model may share)."""
    seen: set[int] = set()
    for be in extras.models.values():
        if be is main or id(be) in seen:
            continue
        seen.add(id(be))
        try:
            be.close()
        except Exception:  # shutting down: a model that fails to close is not worth a traceback
            log.debug("closing an extra model failed", exc_info=True)
