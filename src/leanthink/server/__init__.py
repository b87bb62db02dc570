"""`leanthink serve`: an OpenAI-compatible proxy that applies leanthink methods to any backend.

Everything here is imported lazily: the proxy's dependencies (FastAPI, uvicorn,
pydantic-settings) are the `server` extra, and `leanthink solve` must work without them.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app", "ServerConfig", "DEFAULT_REASONING_EFFORT", "PASSTHROUGH"]


def create_app(config: Any = None, backend: Any = None):
    """Build the FastAPI app."""
    from .app import create_app as _create

    return _create(config, backend)


def __getattr__(name: str) -> Any:
    if name in ("ServerConfig", "DEFAULT_REASONING_EFFORT", "PASSTHROUGH"):
        from . import config

        return getattr(config, name)
    raise AttributeError(name)
