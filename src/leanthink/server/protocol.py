"""OpenAI wire format: request schemas, error bodies, response and chunk builders."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

# -- errors ---------------------------------------------------------------------------

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "upstream_error",
    503: "service_unavailable",
    504: "timeout_error",
}


class ApiError(Exception):
    """An error answered as OpenAI-style JSON: {"error": {message, type, param, code}}."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The wire form. Messages can quote model strings or upstream answers, so secrets
        (`api_key=...`, `user:pass@`, known keys) are masked here, for every error we send."""
        from ..models import redact

        return {"error": {"message": redact(self.message), "type": self.type, "param": redact(self.param),
                          "code": self.code}}


def from_leanthink_error(exc: Exception, param: str | None = None) -> ApiError:
    """Map a LeanthinkError (which carries its HTTP status) to an ApiError."""
    from ..errors import BackendUnavailableError, CapabilityError, ConfigError

    status = getattr(exc, "status_code", 500)
    code = {ConfigError: "invalid_parameter", CapabilityError: "unsupported_by_backend",
            BackendUnavailableError: "upstream_unavailable"}.get(type(exc))
    msg = str(exc)
    if isinstance(exc, BackendUnavailableError) and ("timed out" in msg.lower() or "timeout" in msg.lower()):
        return ApiError(504, msg, code="upstream_timeout")
    return ApiError(status, msg, param=param, code=code)


def from_validation_error(exc: ValidationError) -> ApiError:
    first = exc.errors()[0] if exc.errors() else {}
    loc = ".".join(str(x) for x in first.get("loc", ())) or None
    parts = []
    for e in exc.errors()[:5]:
        where = ".".join(str(x) for x in e.get("loc", ())) or "body"
        parts.append(f"{where}: {e.get('msg')}")
    return ApiError(422, "invalid request: " + "; ".join(parts), param=loc, code="invalid_schema")


# -- requests -------------------------------------------------------------------------


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None


class _Common(BaseModel):
    """Fields shared by chat and legacy completions. Unknown fields are accepted and ignored
    (clients send many); fields leanthink cannot honour are refused in `planning`."""

    model_config = ConfigDict(extra="allow")
    model: str
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    n: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    reasoning_effort: str | None = None
    leanthink: dict[str, Any] | None = None
    logprobs: Any = None


class ChatRequest(_Common):
    messages: list[ChatMessage]
    max_completion_tokens: int | None = None
    tools: Any = None
    functions: Any = None
    tool_choice: Any = None
    response_format: Any = None
    top_logprobs: Any = None


class CompletionRequest(_Common):
    prompt: str | list[str]
    echo: bool | None = None
    suffix: str | None = None
    best_of: int | None = None


# -- responses ------------------------------------------------------------------------


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


def sse(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"
