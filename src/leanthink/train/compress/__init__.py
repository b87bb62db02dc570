"""Stage 2 of post-training: compress collected chains into a training set.

Registered compressors (`get_compressor("tokenskip(ratio=0.6)")`, parameters validated like
methods'): `shortest`, `tokenskip`, `spirit`, `asap`, `rewrite`. The runner verifies every
example and writes the JSONL + summary sidecar (see `train.dataset`).
"""

from __future__ import annotations

from .base import COMPRESSORS, Candidate, ChainRec, Compressor, Context, Drop, Group, get_compressor, register
from .runner import CompressConfig, compress, compress_command

_LOADED = False


def ensure_loaded() -> None:
    """Import the compressor modules (they register themselves)."""
    global _LOADED
    if not _LOADED:
        from . import prune, rewrite, select, steps  # noqa: F401

        _LOADED = True


__all__ = ["COMPRESSORS", "Candidate", "ChainRec", "Compressor", "Context", "Drop", "Group", "get_compressor",
           "register", "CompressConfig", "compress", "compress_command", "ensure_loaded"]
