"""The OpenAI-compatible proxy: `create_app(config)` builds the FastAPI app.

Request path: auth → bounded body → schema (422) → plan (400: method, params, limits) →
admission (a slot, or a bounded FIFO queue, else 429) → the method runs in a worker thread
with a per-request capped backend → JSON, or SSE fed by the worker through an asyncio
queue. A client that goes away (or a timeout, or shutdown) sets the job's cancel flag; the
worker stops at its next token and closes its streams, then frees its slot.

Here: the request path and the endpoints. Admission is `slots.py`; the SSE bodies (a
method's events, a relayed upstream stream) are `events.py`.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import BackendUnavailableError, LeanthinkError
from ..models import public_model_name, redact
from ..loading import RegisteredLoader
from .config import PASSTHROUGH, ServerConfig
from .connection import ClientGone, parse_json_object, read_body
from .extras import close_extras, load_extras
from .metrics import Metrics
from .planning import Plan, build_plan
from .events import SSE_HEADERS, job_events, relay_events
from .protocol import ApiError, ChatRequest, CompletionRequest, from_leanthink_error, from_validation_error, new_id, now
from .slots import Slots, wait_disconnect
from .streaming import ChunkWriter, response_body
from .worker import Job

log = logging.getLogger("leanthink.server")


class ServerState:
    def __init__(self, config: ServerConfig, backend=None):
        self.config = config
        self.backend = backend
        self.load_error: str | None = None
        self.metrics = Metrics()
        self.slots = Slots(config.max_concurrent, config.max_queue)
        self.metrics.running.set_function(lambda: self.slots.running)
        self.metrics.queued.set_function(lambda: len(self.slots.waiters))
        self.executor = ThreadPoolExecutor(max_workers=config.max_concurrent, thread_name_prefix="leanthink-worker")
        self.jobs: set[Job] = set()
        self.extras = RegisteredLoader()  # the operator's extra models and probes, loaded at start
        self.relay = None
        self.started = now()
        self.uvicorn_server = None
        self._retry_task: asyncio.Task | None = None
        self._shutdown_seen: float | None = None
        if backend is not None:
            self._attach(backend)

    # -- backend lifecycle ---------------------------------------------------------------
    def _attach(self, backend) -> None:
        from ..backends.openai_http import OpenAIBackend

        self.backend = backend
        self.load_error = None
        if isinstance(backend, OpenAIBackend):
            from .relay import Relay

            self.relay = Relay(backend, max_connections=self.config.max_concurrent + self.config.max_queue + 4,
                               timeout=self.config.request_timeout)

    async def _load(self) -> None:
        from ..api import get_backend

        try:
            backend = await asyncio.to_thread(get_backend, self.config.model, quiet=True)
        except BackendUnavailableError as exc:
            self.load_error = redact(str(exc))
            log.warning("upstream not reachable yet (%s); retrying in the background", self.load_error)
            self._retry_task = asyncio.create_task(self._retry_load())
            return
        self._attach(backend)

    async def _retry_load(self) -> None:
        from ..api import get_backend

        while self.backend is None:
            await asyncio.sleep(2.0)
            try:
                self._attach(await asyncio.to_thread(get_backend, self.config.model, quiet=True))
                log.info("upstream is up: serving %s", self.backend.model_id)
            except BackendUnavailableError as exc:
                self.load_error = redact(str(exc))

    @asynccontextmanager
    async def lifespan(self, app: FastAPI):
        if self.backend is None:
            await self._load()
        self.extras = await asyncio.to_thread(load_extras, self.config, self.backend)
        yield
        # Uvicorn has let in-flight requests finish (up to its graceful timeout) and cancelled
        # the rest; make sure no worker keeps generating for a request that is gone.
        for job in list(self.jobs):
            job.cancel("shutdown")
        if self._retry_task:
            self._retry_task.cancel()
        await asyncio.to_thread(self.executor.shutdown, True, cancel_futures=True)
        if self.relay:
            await self.relay.aclose()
        close_extras(self.extras, self.backend)

    def shutting_down(self) -> bool:
        return bool(getattr(self.uvicorn_server, "should_exit", False))

    def must_stop(self) -> bool:
        """True once a shutdown has lasted almost the graceful timeout: requests still running
        end themselves cleanly (error event, cancelled worker) before uvicorn cancels them."""
        if not self.shutting_down():
            return False
        if self._shutdown_seen is None:
            self._shutdown_seen = time.perf_counter()
        return time.perf_counter() - self._shutdown_seen >= max(0.0, self.config.shutdown_timeout - 1.0)

    def require_backend(self):
        if self.backend is None:
            raise ApiError(503, f"the model is not available yet: {self.load_error or 'loading'}",
                           code="model_unavailable", headers={"Retry-After": "2"})
        return self.backend

    # -- request helpers -------------------------------------------------------------------
    def check_auth(self, request: Request) -> None:
        keys = self.config.api_keys
        if not keys:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "missing API key: send 'Authorization: Bearer KEY'", code="missing_api_key")
        if not any(hmac.compare_digest(token.encode(), k.encode()) for k in keys):
            raise ApiError(401, "invalid API key", code="invalid_api_key")

    async def read_json(self, request: Request) -> dict[str, Any]:
        """The body as a JSON object: bounded in size (413) and upload time (408); too deep
        or not valid Unicode: 400 (see server/connection.py)."""
        buf = await read_body(request, limit=self.config.max_body_bytes, timeout=self.config.body_timeout)
        return parse_json_object(buf)

    def deadline(self, t0: float) -> float:
        return t0 + self.config.request_timeout

    async def race(self, fut: asyncio.Future, request: Request, deadline: float, job: Job | None = None,
                   cancel_fut: bool = False):
        """Await `fut` unless the client disconnects or the deadline passes first."""
        watcher = asyncio.ensure_future(wait_disconnect(request))
        try:
            while True:
                left = deadline - time.perf_counter()
                done, _ = await asyncio.wait({fut, watcher}, timeout=max(0.0, min(left, 0.5)),
                                             return_when=asyncio.FIRST_COMPLETED)
                if done or left <= 0.5:
                    break
                if self.must_stop():
                    if job is not None:
                        job.cancel("shutdown")
                    if cancel_fut:
                        fut.cancel()
                    raise ApiError(503, "the server is shutting down", code="shutting_down")
        except asyncio.CancelledError:
            if job is not None:
                job.cancel("shutdown" if self.shutting_down() else "disconnect")
            if cancel_fut:
                fut.cancel()
            raise
        finally:
            watcher.cancel()
        if fut in done:
            return fut.result()
        if cancel_fut:
            fut.cancel()
        if watcher in done:
            if job is not None:
                job.cancel("disconnect")
            raise ClientGone()
        if job is not None:
            job.cancel("timeout")
        raise ApiError(504, f"the request did not finish within {self.config.request_timeout:g}s", code="timeout")

    def record(self, endpoint: str, method: str, status: int | str, t0: float) -> None:
        self.metrics.requests.labels(endpoint=endpoint, method=method, status=str(status)).inc()
        self.metrics.latency.labels(endpoint=endpoint, method=method).observe(time.perf_counter() - t0)

    def error_response(self, err: ApiError, endpoint: str = "other", method: str = "none", t0: float | None = None) -> JSONResponse:
        self.metrics.errors.labels(type=err.type, status=str(err.status)).inc()
        if t0 is not None:
            self.record(endpoint, method, err.status, t0)
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers)

    # -- the endpoints ---------------------------------------------------------------------
    async def handle(self, request: Request, endpoint: str) -> Response:
        t0 = time.perf_counter()
        label = "none"
        try:
            self.check_auth(request)
            raw = await self.read_json(request)
            try:
                req = (ChatRequest if endpoint == "chat" else CompletionRequest).model_validate(raw)
            except ValidationError as exc:
                raise from_validation_error(exc) from None
            backend = self.require_backend()
            plan = build_plan(req, self.config, backend, endpoint, raw)
            label = plan.method_label
            if plan.passthrough and self.relay is not None:
                return await self.relay_request(plan, request, t0)
            return await self.run_job(plan, backend, request, t0)
        except ApiError as err:
            return self.error_response(err, endpoint, label, t0)
        except LeanthinkError as exc:
            return self.error_response(from_leanthink_error(exc), endpoint, label, t0)
        except ClientGone as gone:  # not an error of ours: no traceback, no 5xx in the metrics
            self.metrics.client_disconnects.labels(stage=gone.stage).inc()
            self.record(endpoint, label, 499, t0)
            return Response(status_code=499)
        except Exception as exc:  # a bug: answer 500 with a message, log the traceback
            log.exception("internal error")
            return self.error_response(ApiError(500, f"internal error: {type(exc).__name__}: {exc}", code="internal_error"),
                                       endpoint, label, t0)

    async def _admit(self, request: Request, t0: float) -> None:
        wait = self.slots.try_enter()
        if wait is None:
            return
        try:
            await self.race(wait, request, self.deadline(t0))
        except BaseException:
            self.slots.abandon(wait)
            raise

    async def run_job(self, plan: Plan, backend, request: Request, t0: float) -> Response:
        await self._admit(request, t0)
        loop = asyncio.get_running_loop()
        job = Job(plan, backend, self.metrics, loop, streaming=plan.stream, models=self.extras)
        self.jobs.add(job)

        def _done(_f) -> None:  # runs in the worker thread when the job is really over
            loop.call_soon_threadsafe(self._job_done, job)

        try:
            cf = self.executor.submit(job.run)
        except RuntimeError:  # executor shut down
            self._job_done(job)
            raise ApiError(503, "the server is shutting down", code="shutting_down") from None
        cf.add_done_callback(_done)
        fut = asyncio.wrap_future(cf)
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())  # errors are reported, not "never retrieved"
        if plan.stream:
            return await self.stream_job(plan, job, fut, request, t0)
        try:
            outs = await self.race(fut, request, self.deadline(t0), job=job)
        except ApiError as err:
            if err.status in (503, 504):
                # The worker was cancelled; it stops within a fraction of a second, even in a
                # stalled upstream read. Wait for that, so that the slot is free when the
                # client sees the error (and may retry at once).
                await asyncio.wait({fut}, timeout=1.0)
            raise
        if outs is None:  # cancelled in the worker without us asking: only shutdown does that
            raise ApiError(503, "the request was cancelled (server shutting down)", code="cancelled")
        self.observe_ttft(job, t0)
        body = response_body(plan, outs, new_id("chatcmpl" if plan.endpoint == "chat" else "cmpl"), now())
        self.record(plan.endpoint, plan.method_label, 200, t0)
        return JSONResponse(body)

    def _job_done(self, job: Job) -> None:
        self.jobs.discard(job)
        self.slots.release()

    def observe_ttft(self, job: Job, t0: float) -> None:
        if job.first_token_at is not None:
            self.metrics.ttft.labels(method=job.plan.method_label).observe(job.first_token_at - t0)

    async def stream_job(self, plan: Plan, job: Job, fut: asyncio.Future, request: Request, t0: float) -> Response:
        assert job.queue is not None
        # Wait for the first event before sending headers, so that early failures (upstream
        # down, bad backend) still get a proper HTTP status.
        getter = asyncio.ensure_future(job.queue.get())
        try:
            first = await self.race(getter, request, self.deadline(t0), job=job, cancel_fut=True)
        except ApiError as err:
            if err.status in (503, 504):  # as in run_job: answer once the slot is free
                await asyncio.wait({fut}, timeout=1.0)
            raise
        if first[0] == "error":
            await asyncio.wait({fut})  # the worker is done; re-raise its error
            exc = first[1]
            raise exc if isinstance(exc, (ApiError, LeanthinkError)) else ApiError(
                500, f"internal error: {type(exc).__name__}: {exc}", code="internal_error")
        if first[0] == "cancelled":
            raise ApiError(503, "the request was cancelled (server shutting down)", code="cancelled")
        writer = ChunkWriter(plan, new_id("chatcmpl" if plan.endpoint == "chat" else "cmpl"), now())

        def cleanup() -> None:  # also runs when the client left before the body started
            if not job.finished and job.cancel_reason is None:
                job.cancel("shutdown" if self.shutting_down() else "disconnect")

        return StreamingResponse(job_events(self, plan, job, writer, first, t0), media_type="text/event-stream",
                                 headers=SSE_HEADERS, background=BackgroundTask(cleanup))

    # -- pass-through relay (OpenAI-compatible upstream) -----------------------------------
    async def relay_request(self, plan: Plan, request: Request, t0: float) -> Response:
        await self._admit(request, t0)
        handed_off = False
        try:
            body = self.relay.prepare(plan.body, plan.cap)
            path = "/chat/completions" if plan.endpoint == "chat" else "/completions"
            if not plan.stream:
                data = await self.race(asyncio.ensure_future(self.relay.complete(path, body)), request,
                                       self.deadline(t0), cancel_fut=True)
                if isinstance(data, dict):
                    data["model"] = plan.model_name
                    data["leanthink"] = {"method": PASSTHROUGH, "method_source": plan.source, "token_cap": plan.cap}
                    usage = data.get("usage") or {}
                    if usage.get("completion_tokens"):
                        self.metrics.generated.labels(method=PASSTHROUGH).inc(usage["completion_tokens"])
                        self.metrics.tokens.labels(method=PASSTHROUGH, phase="answer").inc(usage["completion_tokens"])
                    if usage.get("prompt_tokens"):
                        self.metrics.tokens.labels(method=PASSTHROUGH, phase="prompt").inc(usage["prompt_tokens"])
                self.record(plan.endpoint, PASSTHROUGH, 200, t0)
                return JSONResponse(data)
            resp = await self.race(asyncio.ensure_future(self.relay.open_stream(path, body)), request,
                                   self.deadline(t0), cancel_fut=True)
            handed_off = True
            done = {"released": False}

            def release() -> None:
                if not done["released"]:
                    done["released"] = True
                    self.slots.release()

            async def cleanup() -> None:  # the response's background: runs even if the body never started
                release()
                await resp.aclose()

            return StreamingResponse(relay_events(self, plan, resp, t0, release), media_type="text/event-stream",
                                     headers=SSE_HEADERS, background=BackgroundTask(cleanup))
        finally:
            if not handed_off:
                self.slots.release()

    # -- small endpoints -----------------------------------------------------------------
    def models_body(self) -> dict[str, Any]:
        from ..methods import REGISTRY, ensure_loaded

        ensure_loaded()
        base = redact(self.backend.model_id if self.backend is not None else self.config.model)
        ids = [base] + ([self.config.served_model_name] if self.config.served_model_name else [])
        ids += [f"{m}/{base}" for m in sorted(REGISTRY)] + [f"{PASSTHROUGH}/{base}"]
        return {"object": "list",
                "data": [{"id": i, "object": "model", "created": self.started, "owned_by": "leanthink"} for i in ids]}


def create_app(config: ServerConfig | None = None, backend=None) -> FastAPI:
    """Build the proxy app. `backend` (optional) is used instead of loading `config.model`."""
    config = config or ServerConfig()
    state = ServerState(config, backend)
    app = FastAPI(title="leanthink", version="0.1.0", lifespan=state.lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.leanthink = state

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        msg = {404: f"not found: {request.method} {request.url.path}",
               405: f"method {request.method} not allowed on {request.url.path}"}.get(exc.status_code, str(exc.detail))
        return state.error_response(ApiError(exc.status_code, msg, code="not_found" if exc.status_code == 404 else None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        return state.error_response(ApiError(422, f"invalid request: {exc.errors()}", code="invalid_schema"))

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await state.handle(request, "chat")

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await state.handle(request, "completions")

    @app.get("/v1/models")
    async def list_models(request: Request):
        try:
            state.check_auth(request)
        except ApiError as err:
            return state.error_response(err)
        return JSONResponse(state.models_body())

    @app.get("/health")
    async def health():
        # Open to anyone: a model name, no paths, URLs or error texts. "degraded" = loaded, but
        # the upstream does not answer now (checked at most every few seconds, see Relay.check).
        model = public_model_name(state.backend.model_id if state.backend is not None else config.model)
        if state.backend is None:
            return JSONResponse({"status": "unavailable", "model": model, "error": "upstream not reachable yet" if state.load_error else "loading"},
                                status_code=503)
        body = {"status": "ok", "model": model, "backend": state.backend.name,
                "running": state.slots.running, "queued": len(state.slots.waiters)}
        if state.relay is not None:
            up, detail = await state.relay.check()
            body["upstream"] = detail
            if not up:
                return JSONResponse(body | {"status": "degraded"}, status_code=503)
        return JSONResponse(body)

    @app.get("/metrics")
    async def metrics():
        return Response(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return app


__all__ = ["create_app", "ServerConfig"]
