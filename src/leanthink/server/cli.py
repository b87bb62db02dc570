"""The `leanthink serve` command (registered in `leanthink.cli` with `app.command()(serve)`)."""

from __future__ import annotations

from typing import List, Optional

import typer


#: Defaults as `ServerConfig` has them (checked by a test), shown in --help like every other
#: command's. Only options given on the command line reach `ServerConfig`, so an unset option
#: leaves its `LEANTHINK_*` environment variable in force.
DEFAULTS = {"model": "qwen2.5-coder-1.5b", "host": "127.0.0.1", "port": 8000, "max_concurrent": 4, "max_queue": 32,
            "max_tokens_limit": 4096, "max_n": 4, "request_timeout": 600.0, "default_method": "think",
            "answer_format": "natural", "shutdown_timeout": 30.0, "access_log": True, "log_level": "info"}


def serve(
    ctx: typer.Context,
    model: str = typer.Option(DEFAULTS["model"], "--model", metavar="MODEL", help="Model string: a preset, a .gguf path, or openai:http://HOST:PORT/v1#NAME?template=... (the model's own template: a .gguf, HF directory or preset name) to put leanthink in front of vLLM/SGLang/llama.cpp. Env: LEANTHINK_MODEL."),
    host: str = typer.Option(DEFAULTS["host"], "--host", metavar="HOST", help="Interface to listen on. Env: LEANTHINK_HOST."),
    port: int = typer.Option(DEFAULTS["port"], "--port", metavar="N", help="Port. Env: LEANTHINK_PORT."),
    api_key: Optional[List[str]] = typer.Option(None, "--api-key", metavar="KEY", help="Accepted bearer key (repeatable); none: no auth. Env: LEANTHINK_API_KEYS=k1,k2."),
    concurrency: int = typer.Option(DEFAULTS["max_concurrent"], "--concurrency", metavar="N", help="Requests generating at once. Env: LEANTHINK_MAX_CONCURRENT."),
    max_concurrent: Optional[int] = typer.Option(None, "--max-concurrent", hidden=True),
    max_queue: int = typer.Option(DEFAULTS["max_queue"], "--max-queue", metavar="N", help="Requests waiting for a slot before 429."),
    max_tokens_limit: int = typer.Option(DEFAULTS["max_tokens_limit"], "--max-tokens-limit", metavar="N", help="Largest max_(completion_)tokens per choice; also the default cap."),
    max_n: int = typer.Option(DEFAULTS["max_n"], "--max-n", metavar="N", help="Largest n (choices per request)."),
    request_timeout: float = typer.Option(DEFAULTS["request_timeout"], "--request-timeout", metavar="S", help="Seconds before a request is cancelled with 504."),
    default_method: str = typer.Option(DEFAULTS["default_method"], "--default-method", metavar="SPEC", help="Method for requests that name none (`passthrough` = no method)."),
    answer_format: str = typer.Option(DEFAULTS["answer_format"], "--answer-format", metavar="natural|boxed", help="What `content` holds unless a request sets leanthink.answer_format: the model's final answer as text (natural), or the grading form with \\boxed{} (boxed)."),
    served_model_name: Optional[str] = typer.Option(None, "--served-model-name", metavar="NAME", help="Another name clients may use for the model."),
    reasoning_effort: Optional[List[str]] = typer.Option(None, "--reasoning-effort", metavar="LEVEL=SPEC", help="Override the reasoning_effort mapping (repeatable), e.g. low='budget(max_thinking=128)'."),
    shutdown_timeout: float = typer.Option(DEFAULTS["shutdown_timeout"], "--shutdown-timeout", metavar="S", help="Seconds in-flight requests get to finish on shutdown."),
    extra_model: Optional[List[str]] = typer.Option(None, "--extra-model", metavar="NAME=MODEL", help="A second model methods may use (repeatable), loaded at start; clients refer to it by NAME only (route/spec-reason small_model=NAME). route and spec-reason use the one named 'small' by default: without --extra-model small=MODEL, requests for them get a 400 unless they pass small_model=NAME (or none for route). Env: LEANTHINK_EXTRA_MODELS=small=qwen2.5-coder-0.5b,..."),
    probe: Optional[List[str]] = typer.Option(None, "--probe", metavar="NAME=PATH", help="A probe for probe-exit (repeatable), read at start; clients pass probe=NAME. Env: LEANTHINK_PROBES=NAME=PATH,..."),
    access_log: bool = typer.Option(DEFAULTS["access_log"], "--access-log/--no-access-log", help="Log every request."),
    log_level: str = typer.Option(DEFAULTS["log_level"], "--log-level", metavar="LEVEL", help="uvicorn log level."),
):
    """Serve an OpenAI-compatible API (/v1/chat/completions, /v1/completions) that applies leanthink methods."""
    import os

    _require_server_extra()
    # llama.cpp's OpenMP threads spin while idle by default; on a shared or oversubscribed CPU
    # that stalls generation by seconds (measured 38 s -> 2.4 s for six short requests with
    # another job on the cores). Sleeping idle threads cost a few µs per token on a free CPU.
    # Must be set before llama.cpp is loaded; an explicit value from the user wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    def on_cli(name: str) -> bool:  # (by name: typer may bundle its own copy of click)
        return getattr(ctx.get_parameter_source(name), "name", None) == "COMMANDLINE"

    if max_concurrent is not None and not on_cli("concurrency"):
        concurrency = max_concurrent  # the old spelling, still accepted
    values = dict(model=model, host=host, port=port, api_keys=api_key or None, max_concurrent=concurrency,
                  answer_format=answer_format, max_queue=max_queue, max_tokens_limit=max_tokens_limit, max_n=max_n,
                  request_timeout=request_timeout, default_method=default_method, served_model_name=served_model_name,
                  reasoning_effort=reasoning_effort or None, shutdown_timeout=shutdown_timeout, access_log=access_log,
                  log_level=log_level, extra_models=extra_model or None, probes=probe or None)
    params = {"max_concurrent": "concurrency", "api_keys": "api_key", "extra_models": "extra_model", "probes": "probe"}
    given = {k: v for k, v in values.items()
             if on_cli(params.get(k, k)) or (k == "max_concurrent" and max_concurrent is not None)}
    _run(_config(given))


def _require_server_extra() -> None:
    """The proxy's dependencies are the `server` extra (part of `default`): a one-line hint if missing."""
    from ..errors import MissingDependencyError

    try:
        import fastapi  # noqa: F401
        import pydantic_settings  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        typer.echo(f"error: {MissingDependencyError(exc.name or 'fastapi', 'server', 'leanthink serve')}", err=True)
        raise typer.Exit(2)


def _config(given: dict):
    """The server configuration from the options given on the command line (the rest comes
    from `LEANTHINK_*` variables or defaults), with every model string and probe file checked
    before any model loads. A bad value is one line on stderr and exit 2."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from ..errors import LeanthinkError
    from .config import ServerConfig

    try:
        config = ServerConfig(**{k: v for k, v in given.items() if v is not None})
        _check_operator_models(config)
    except ValidationError as exc:
        msgs = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors())
        typer.echo(f"error: bad server option: {msgs}", err=True)
        raise typer.Exit(2)
    except (SettingsError, LeanthinkError) as exc:  # SettingsError: a LEANTHINK_* variable that does not parse
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2)
    return config


def _check_operator_models(config) -> None:
    """The served model, the extra models and the probe files parse (probes are small files:
    a bad one fails here, before any model loads)."""
    from ..errors import ConfigError, LeanthinkError
    from ..models import parse_model_string
    from ..probe_file import load_probe

    parse_model_string(config.model)
    for name, extra in config.extra_models.items():
        try:
            parse_model_string(extra)
        except LeanthinkError as exc:
            raise ConfigError(f"--extra-model {name}: {exc}") from None
    for name, path in config.probes.items():
        try:
            load_probe(path)
        except LeanthinkError as exc:
            raise ConfigError(f"--probe {name}: {exc}") from None


def _run(config) -> None:
    """Start uvicorn with the app; exit 1 if it could not start (e.g. the port is taken)."""
    import logging

    import uvicorn

    from ..models import redact
    from .app import create_app
    from .connection import guarded_http_protocol

    logging.basicConfig(level=config.log_level.upper(), format="%(levelname)s:     %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per upstream call is noise
    app = create_app(config)
    uv = uvicorn.Config(app, host=config.host, port=config.port, log_level=config.log_level.lower(),
                        access_log=config.access_log, timeout_graceful_shutdown=config.shutdown_timeout,  # type: ignore[arg-type]  # a float works
                        timeout_keep_alive=config.keep_alive_timeout,  # type: ignore[arg-type]
                        http=guarded_http_protocol(config.header_timeout))  # closes connections that stall their headers
    server = uvicorn.Server(uv)
    app.state.leanthink.uvicorn_server = server
    auth = f"{len(config.api_keys)} API key(s)" if config.api_keys else "no auth"
    typer.echo(f"leanthink serve: {redact(config.model)} on http://{config.host}:{config.port}/v1 "
               f"(default method {config.default_method}, {config.answer_format} answers, {auth}, concurrency {config.max_concurrent}, "
               f"queue {config.max_queue}, max tokens {config.max_tokens_limit}"
               + (f", extra models {', '.join(sorted(config.extra_models))}" if config.extra_models else "")
               + (f", probes {', '.join(sorted(config.probes))}" if config.probes else "") + ")", err=True)
    server.run()
    if getattr(server, "started", True) is False:
        raise typer.Exit(1)
