"""Settings of `leanthink serve`: CLI options override `LEANTHINK_*` environment variables."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ..models import DEFAULT_MODEL

#: OpenAI's `reasoning_effort` → the leanthink method that serves it. Used only when the
#: request names no method itself (model prefix or `leanthink.method` win).
DEFAULT_REASONING_EFFORT: dict[str, str] = {
    "none": "direct",
    "minimal": "direct",
    "low": "budget(max_thinking=256)",
    "medium": "budget(max_thinking=1024)",
    "high": "think",
}

#: Not a registered method: the request goes to the model unchanged (no answer instruction,
#: no thinking control). Against an OpenAI-compatible upstream the body is relayed as is.
PASSTHROUGH = "passthrough"


class ServerConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LEANTHINK_", extra="forbid")

    model: str = Field(DEFAULT_MODEL, description="leanthink model string: preset, .gguf path, openai:URL#NAME?template=...")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Accepted bearer keys; empty = no auth. Env: comma-separated.")
    served_model_name: str | None = Field(None, description="Extra name clients may use for the model.")
    default_method: str = Field("think", description="Method when the request names none (or `passthrough`).")
    max_concurrent: int = Field(4, ge=1, description="Requests generating at once.")
    max_queue: int = Field(32, ge=0, description="Requests waiting for a slot; beyond this: 429.")
    max_tokens_limit: int = Field(4096, ge=1, description="Largest max_(completion_)tokens a request may ask; also the default cap.")
    max_n: int = Field(4, ge=1, description="Largest `n` (choices per request).")
    max_body_bytes: int = Field(1_000_000, ge=1024, description="Larger request bodies get 413.")
    request_timeout: float = Field(600.0, gt=0, description="Seconds before a request is cancelled with 504.")
    shutdown_timeout: float = Field(30.0, ge=0, description="Graceful shutdown: seconds in-flight requests get to finish.")
    reasoning_effort: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=lambda: dict(DEFAULT_REASONING_EFFORT),
        description="reasoning_effort level -> method. Env: JSON or `low=budget(max_thinking=128),high=think`.")
    access_log: bool = True
    log_level: str = "info"

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = v.split(",")
        if isinstance(v, (list, tuple)):
            return [k.strip() for k in v if k and k.strip()]
        return v

    @field_validator("reasoning_effort", mode="before")
    @classmethod
    def _parse_effort(cls, v: Any) -> Any:
        """Accept a dict, JSON, or `low=budget(max_thinking=128),high=think` overrides."""
        if isinstance(v, str):
            v = v.strip()
            if v.startswith("{"):
                import json

                v = json.loads(v)
            else:
                v = [x for x in _split_assignments(v)]
        if isinstance(v, (list, tuple)):
            out = dict(DEFAULT_REASONING_EFFORT)
            for item in v:
                level, sep, method = item.partition("=")
                if not sep or not level.strip() or not method.strip():
                    raise ValueError(f"reasoning effort must be LEVEL=METHOD, got '{item}'")
                out[level.strip().lower()] = method.strip()
            return out
        return v

    @model_validator(mode="after")
    def _check_methods(self):
        from ..methods import get_method

        for level, spec in self.reasoning_effort.items():
            if spec != PASSTHROUGH:
                get_method(spec)  # ConfigError on a bad spec: fail at startup, not per request
        if self.default_method != PASSTHROUGH:
            get_method(self.default_method)
        return self


def _split_assignments(s: str) -> list[str]:
    """Split `a=x(p=1,q=2),b=y` on commas outside parentheses."""
    from ..methods.base import _split_top

    return [p.strip() for p in _split_top(s, ",") if p.strip()]
