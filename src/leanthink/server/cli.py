"""The `leanthink serve` command (registered in `leanthink.cli` with `app.command()(serve)`)."""

from __future__ import annotations

from typing import List, Optional

import typer


def serve(
    model: Optional[str] = typer.Option(None, "--model", help="Model string: a preset (default qwen2.5-coder-1.5b), a .gguf path, or openai:http://HOST:PORT/v1#NAME?template=chatml to put leanthink in front of vLLM/SGLang/llama.cpp. Env: LEANTHINK_MODEL."),
    host: Optional[str] = typer.Option(None, "--host", help="Interface to listen on (default 127.0.0.1)."),
    port: Optional[int] = typer.Option(None, "--port", help="Port (default 8000)."),
    api_key: Optional[List[str]] = typer.Option(None, "--api-key", help="Accepted bearer key (repeatable). Env: LEANTHINK_API_KEYS=k1,k2. None: no auth."),
    max_concurrent: Optional[int] = typer.Option(None, "--max-concurrent", help="Requests generating at once (default 4)."),
    max_queue: Optional[int] = typer.Option(None, "--max-queue", help="Requests waiting for a slot before 429 (default 32)."),
    max_tokens_limit: Optional[int] = typer.Option(None, "--max-tokens-limit", help="Largest max_(completion_)tokens per choice; also the default cap (default 4096)."),
    max_n: Optional[int] = typer.Option(None, "--max-n", help="Largest n (choices per request, default 4)."),
    request_timeout: Optional[float] = typer.Option(None, "--request-timeout", help="Seconds before a request is cancelled with 504 (default 600)."),
    default_method: Optional[str] = typer.Option(None, "--default-method", help="Method for requests that name none (default think; `passthrough` = no method)."),
    served_model_name: Optional[str] = typer.Option(None, "--served-model-name", help="Another name clients may use for the model."),
    reasoning_effort: Optional[List[str]] = typer.Option(None, "--reasoning-effort", help="Override the reasoning_effort mapping, LEVEL=METHOD (repeatable), e.g. low='budget(max_thinking=128)'."),
    shutdown_timeout: Optional[float] = typer.Option(None, "--shutdown-timeout", help="Seconds in-flight requests get to finish on shutdown (default 30)."),
    access_log: Optional[bool] = typer.Option(None, "--access-log/--no-access-log", help="Log every request (default on)."),
    log_level: Optional[str] = typer.Option(None, "--log-level", help="uvicorn log level (default info)."),
):
    """Serve an OpenAI-compatible API (/v1/chat/completions, /v1/completions) that applies leanthink methods."""
    import logging
    import os

    # llama.cpp's OpenMP threads spin while idle by default; on a shared or oversubscribed CPU
    # that stalls generation by seconds (measured 38 s -> 2.4 s for six short requests with
    # another job on the cores). Sleeping idle threads cost a few µs per token on a free CPU.
    # Must be set before llama.cpp is loaded; an explicit value from the user wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from ..errors import LeanthinkError
    from ..models import parse_model_string
    from .config import ServerConfig

    given = dict(model=model, host=host, port=port, api_keys=api_key or None, max_concurrent=max_concurrent,
                 max_queue=max_queue, max_tokens_limit=max_tokens_limit, max_n=max_n, request_timeout=request_timeout,
                 default_method=default_method, served_model_name=served_model_name,
                 reasoning_effort=reasoning_effort or None, shutdown_timeout=shutdown_timeout, access_log=access_log,
                 log_level=log_level)
    try:
        config = ServerConfig(**{k: v for k, v in given.items() if v is not None})
        parse_model_string(config.model)
    except ValidationError as exc:
        msgs = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors())
        typer.echo(f"error: bad server option: {msgs}", err=True)
        raise typer.Exit(2)
    except SettingsError as exc:  # a LEANTHINK_* environment variable that does not parse
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2)
    except LeanthinkError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2)

    import uvicorn

    from .app import create_app

    logging.basicConfig(level=config.log_level.upper(), format="%(levelname)s:     %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per upstream call is noise
    app = create_app(config)
    uv = uvicorn.Config(app, host=config.host, port=config.port, log_level=config.log_level.lower(),
                        access_log=config.access_log, timeout_graceful_shutdown=config.shutdown_timeout,  # type: ignore[arg-type]  # a float works
                        timeout_keep_alive=30)
    server = uvicorn.Server(uv)
    app.state.leanthink.uvicorn_server = server
    auth = f"{len(config.api_keys)} API key(s)" if config.api_keys else "no auth"
    typer.echo(f"leanthink serve: {config.model} on http://{config.host}:{config.port}/v1 "
               f"(default method {config.default_method}, {auth}, {config.max_concurrent} concurrent, "
               f"queue {config.max_queue}, max tokens {config.max_tokens_limit})", err=True)
    server.run()
    if getattr(server, "started", True) is False:
        raise typer.Exit(1)
