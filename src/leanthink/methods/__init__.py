"""Efficiency methods. Importing a method module registers it."""

from __future__ import annotations

from .base import REGISTRY, Method, PromptStyle, Task, get_method, register

_LOADED = False


def ensure_loaded() -> None:
    """Import every method module once, so the registry is complete."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    from . import baselines, collab, control, early_exit, prompting, sampling  # noqa: F401
    from ..latent import methods as _latent  # noqa: F401  (lightthinker, coconut, codi, softcot)


__all__ = ["REGISTRY", "Method", "PromptStyle", "Task", "get_method", "register", "ensure_loaded"]
