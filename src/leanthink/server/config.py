"""Settings of `leanthink serve`: CLI options override `LEANTHINK_*` environment variables."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

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

#: Names of extra models and probes: what a request may write in `small_model`/`probe`.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class ServerConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LEANTHINK_", extra="forbid")

    model: str = Field(DEFAULT_MODEL, description="leanthink model string: preset, .gguf path, openai:URL#NAME?template=...")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Accepted bearer keys; empty = no auth. Env: comma-separated.")
    served_model_name: str | None = Field(None, description="Extra name clients may use for the model.")
    default_method: str = Field("think", description="Method when the request names none (or `passthrough`).")
    answer_format: Literal["natural", "boxed"] = Field(
        "natural", description="What `content` holds unless a request says (leanthink.answer_format): the model's "
                               "final answer as text (natural) or the grading form with \\boxed{} (boxed).")
    max_concurrent: int = Field(4, ge=1, description="Requests generating at once.")
    max_queue: int = Field(32, ge=0, description="Requests waiting for a slot; beyond this: 429.")
    max_tokens_limit: int = Field(4096, ge=1, description="Largest max_(completion_)tokens a request may ask; also the default cap.")
    max_n: int = Field(4, ge=1, description="Largest `n` (choices per request).")
    max_body_bytes: int = Field(1_000_000, ge=1024, description="Larger request bodies get 413.")
    request_timeout: float = Field(600.0, gt=0, description="Seconds before a request is cancelled with 504.")
    shutdown_timeout: float = Field(30.0, ge=0, description="Graceful shutdown: seconds in-flight requests get to finish.")
    header_timeout: float = Field(15.0, gt=0, description="Seconds a connection gets to send a request's headers "
                                  "(from opening, or from its first byte after a keep-alive pause); then it is closed.")
    body_timeout: float = Field(30.0, gt=0, description="Seconds a request's body may take to arrive; then 408.")
    keep_alive_timeout: float = Field(15.0, gt=0, description="Idle keep-alive connections are closed after this.")
    reasoning_effort: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=lambda: dict(DEFAULT_REASONING_EFFORT),
        description="reasoning_effort level -> method. Env: JSON or `low=budget(max_thinking=128),high=think`.")
    extra_models: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        description="Models that methods may load (route/spec-reason small_model), NAME -> model string; loaded at "
                    "start. Requests name them only by NAME. Env: JSON or `small=qwen2.5-coder-0.5b,b=...`.")
    probes: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        description="Probes for probe-exit, NAME -> probe file; read at start. Env: JSON or `NAME=PATH,...`.")
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

    @field_validator("extra_models", "probes", mode="before")
    @classmethod
    def _parse_named(cls, v: Any, info) -> Any:
        """Accept a dict, JSON, `NAME=VALUE,...` (env) or a list of `NAME=VALUE` (repeated flag)."""
        flag = "--extra-model" if info.field_name == "extra_models" else "--probe"
        if isinstance(v, str):
            v = v.strip()
            if v.startswith("{"):
                import json

                v = json.loads(v)
            else:
                v = [x.strip() for x in v.split(",") if x.strip()]
        if isinstance(v, (list, tuple)):
            out: dict[str, str] = {}
            for item in v:
                name, sep, value = str(item).partition("=")
                if not sep or not name.strip() or not value.strip():
                    raise ValueError(f"{flag} must be NAME=VALUE, got '{item}'")
                if name.strip() in out:
                    raise ValueError(f"{flag}: the name '{name.strip()}' is given twice")
                out[name.strip()] = value.strip()
            v = out
        if isinstance(v, dict):
            for name, value in v.items():
                if not isinstance(name, str) or not NAME_RE.match(name):
                    raise ValueError(f"{flag}: bad name '{name}' (letters, digits, '.', '_', '-'; at most 64)")
                if not isinstance(value, str) or not value.strip():
                    raise ValueError(f"{flag}: '{name}' needs a value")
        return v

    @model_validator(mode="after")
    def _check_methods(self):
        from ..methods import get_method

        specs = [s for s in self.reasoning_effort.values() if s != PASSTHROUGH]
        if self.default_method != PASSTHROUGH:
            specs.append(self.default_method)
        for spec in specs:
            # ConfigError on a bad spec, or one that names an unregistered extra model or
            # probe: fail at startup, not on every request
            check_resources(get_method(spec).resources(), self, where=f"method '{spec}': ")
        return self


def check_resources(resources, config: ServerConfig, where: str = "") -> None:
    """Raise ConfigError if a method's resources (`Method.resources()`) name a model or probe
    the operator did not register. Compares names only: nothing is parsed, opened or
    contacted, and the value is not echoed."""
    from ..errors import ConfigError
    from ..loading import unknown_model_message, unknown_probe_message

    for r in resources:
        if r.kind == "model" and r.name not in config.extra_models:
            raise ConfigError(where + unknown_model_message(r.name, config.extra_models))
        if r.kind == "probe" and r.name not in config.probes:
            raise ConfigError(where + unknown_probe_message(config.probes))


def _split_assignments(s: str) -> list[str]:
    """Split `a=x(p=1,q=2),b=y` on commas outside parentheses."""
    from ..methods.base import _split_top

    return [p.strip() for p in _split_top(s, ",") if p.strip()]
