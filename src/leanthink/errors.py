"""Errors users can act on.

Every error a user can cause (bad flag, missing extra, unreachable server, corrupt
model file) is a `LeanthinkError`: the CLI prints its message without a traceback,
the server maps it to an OpenAI-style error JSON. Anything else is a bug.
"""

from __future__ import annotations


class LeanthinkError(Exception):
    """Base class for errors caused by input or environment, not by a bug."""

    #: HTTP status the proxy answers with for this error.
    status_code: int = 400


class ConfigError(LeanthinkError):
    """Bad method name, bad parameter, bad model string, empty question..."""


def install_hint(extra: str) -> str:
    """The command that installs an extra, written as the README writes it (a source checkout)."""
    return f'pip install -e ".[{extra}]"'


class MissingDependencyError(LeanthinkError):
    """An optional extra is not installed."""

    def __init__(self, package: str, extra: str, why: str = ""):
        hint = install_hint(extra)
        msg = f"{why + ': ' if why else ''}the optional dependency '{package}' is not installed. Install it with: {hint}"
        super().__init__(msg)


class CapabilityError(LeanthinkError):
    """A method needs something the backend cannot do (e.g. logprobs over a chat-only API)."""


class ModelFileError(LeanthinkError):
    """Model weights missing, unreadable or corrupt (sha256 mismatch)."""


class BackendUnavailableError(LeanthinkError):
    """The engine or server cannot be reached or failed while generating."""

    status_code = 502


class DataError(LeanthinkError):
    """A dataset file is missing or has a malformed line."""


def require(module: str, extra: str, why: str = ""):
    """Import an optional module or raise a MissingDependencyError naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(module.split(".")[0], extra, why) from exc
