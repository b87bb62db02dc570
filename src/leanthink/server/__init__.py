"""`leanthink serve`: an OpenAI-compatible proxy that applies leanthink methods to any backend."""

from __future__ import annotations

from .config import DEFAULT_REASONING_EFFORT, PASSTHROUGH, ServerConfig


def create_app(config: ServerConfig | None = None, backend=None):
    """Build the FastAPI app (imported lazily: FastAPI is an optional dependency)."""
    from .app import create_app as _create

    return _create(config, backend)


__all__ = ["create_app", "ServerConfig", "DEFAULT_REASONING_EFFORT", "PASSTHROUGH"]
