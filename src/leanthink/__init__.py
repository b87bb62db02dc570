"""leanthink: make reasoning models spend fewer tokens for the same accuracy."""

from __future__ import annotations

__version__ = "0.1.0"

from .api import StreamEvent, get_backend, solve, solve_many, stream_solve  # noqa: E402
from .errors import LeanthinkError  # noqa: E402
from .methods import get_method  # noqa: E402
from .result import Result, TraceEvent, Usage  # noqa: E402

__all__ = ["solve", "solve_many", "stream_solve", "StreamEvent", "get_backend", "get_method", "Result", "Usage", "TraceEvent", "LeanthinkError", "__version__"]
