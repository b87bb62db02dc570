"""The SSE bodies of streaming responses: a method's events from its worker, or an upstream's
relayed events in pass-through mode.

Both await their next event in slices of at most half a second, so a request is cut on time
at its deadline (504) or when a shutdown has lasted almost its graceful timeout (503): the
client then gets an error event instead of a connection that just stops. Every way out
records the request's status in the metrics once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, AsyncIterator, Callable, Protocol

from ..errors import LeanthinkError
from .config import PASSTHROUGH
from .planning import Plan
from .protocol import ApiError, from_leanthink_error
from .streaming import ChunkWriter
from .worker import Job

log = logging.getLogger("leanthink.server")

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class ServerState(Protocol):
    """What the event streams use of the app's state (`app.ServerState`)."""

    config: Any
    metrics: Any
    relay: Any

    def deadline(self, t0: float) -> float: ...
    def must_stop(self) -> bool: ...
    def shutting_down(self) -> bool: ...
    def record(self, endpoint: str, method: str, status: int | str, t0: float) -> None: ...
    def observe_ttft(self, job: Job, t0: float) -> None: ...


def _timeout_error(state: ServerState) -> ApiError:
    return ApiError(504, f"the request did not finish within {state.config.request_timeout:g}s", code="timeout")


def _shutdown_error() -> ApiError:
    return ApiError(503, "the server is shutting down", code="shutting_down")


def _worker_error(kind: str, exc) -> ApiError:
    """The error event a worker's `cancelled` (reason) or `error` (exception) event becomes."""
    if kind == "cancelled":
        return ApiError(504 if exc == "timeout" else 503, f"generation cancelled ({exc})", code="cancelled")
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, LeanthinkError):
        return from_leanthink_error(exc)
    log.error("worker failed: %r", exc)
    return ApiError(500, f"internal error: {type(exc).__name__}: {exc}", code="internal_error")


def _error_chunks(state: ServerState, err: ApiError) -> list[bytes]:
    state.metrics.errors.labels(type=err.type, status=str(err.status)).inc()
    return list(ChunkWriter.error(err.body()))


async def _next_job_event(state: ServerState, job: Job, getter: asyncio.Future, t0: float) -> tuple | ApiError:
    """The worker's next event, or the ApiError that ends the stream first (deadline,
    shutdown); then the job is cancelled and the pending read dropped."""
    while True:
        left = state.deadline(t0) - time.perf_counter()
        if not state.must_stop():
            done, _ = await asyncio.wait({getter}, timeout=max(0.0, min(left, 0.5)))
            if done:
                return getter.result()
        if left <= 0.5:
            job.cancel("timeout")
            getter.cancel()
            return _timeout_error(state)
        if state.must_stop():
            job.cancel("shutdown")
            getter.cancel()
            return _shutdown_error()


async def job_events(state: ServerState, plan: Plan, job: Job, writer: ChunkWriter, first: tuple,
                     t0: float) -> AsyncIterator[bytes]:
    """SSE chunks for a method's run, from its worker's events (`first` already received):
    deltas, finished choices, then usage and [DONE]; or an error event."""
    status: int | str = 200
    completed = False
    getter: asyncio.Future | None = None
    ev: tuple | ApiError = first
    try:
        while True:
            if isinstance(ev, ApiError):
                status = ev.status
                for b in _error_chunks(state, ev):
                    yield b
                return
            kind = ev[0]
            if kind == "delta":
                for b in writer.delta(*ev[1:]):
                    yield b
            elif kind == "choice":
                for b in writer.finish_choice(ev[1]):
                    yield b
            elif kind == "done":
                state.observe_ttft(job, t0)
                if plan.include_usage:
                    yield writer.usage(job.outputs)
                yield writer.done()
                completed = True
                return
            elif kind in ("error", "cancelled"):
                ev = _worker_error(kind, ev[1])
                continue
            getter = asyncio.ensure_future(job.queue.get())
            ev = await _next_job_event(state, job, getter, t0)
    except (asyncio.CancelledError, GeneratorExit):
        status = 499
        job.cancel("shutdown" if state.shutting_down() else "disconnect")
        if not state.shutting_down():
            state.metrics.client_disconnects.labels(stage="streaming").inc()
        raise
    finally:
        if getter is not None and not getter.done():
            getter.cancel()
        if not completed and not job.finished:
            job.cancel("disconnect" if status == 499 else "aborted")
        state.record(plan.endpoint, plan.method_label, status, t0)


async def relay_events(state: ServerState, plan: Plan, resp, t0: float, release: Callable[[], None]) -> AsyncIterator[bytes]:
    """Relay the upstream's events until it ends, the request's deadline passes (504) or
    shutdown (503). The next event is awaited in slices, so a stalled or trickling
    upstream is cut on time; cancelling the pending read closes the upstream stream."""
    counter = [0]
    status: int | str = 200
    upstream = state.relay.iter_stream(resp, counter)
    nxt: asyncio.Future | None = None
    try:
        while True:
            if nxt is None:
                nxt = asyncio.ensure_future(upstream.__anext__())
            left = state.deadline(t0) - time.perf_counter()
            done, _ = await asyncio.wait({nxt}, timeout=max(0.0, min(left, 0.5)))
            if done:
                try:
                    data = nxt.result()
                except StopAsyncIteration:
                    return
                nxt = None
                yield data
            err = None
            if state.deadline(t0) - time.perf_counter() <= 0:
                err = _timeout_error(state)
            elif state.must_stop():
                err = _shutdown_error()
            if err is not None:
                status = err.status
                for b in _error_chunks(state, err):
                    yield b
                return
    except (asyncio.CancelledError, GeneratorExit):
        status = 499
        state.metrics.cancelled.labels(reason="shutdown" if state.shutting_down() else "disconnect").inc()
        if not state.shutting_down():
            state.metrics.client_disconnects.labels(stage="streaming").inc()
        raise
    finally:
        events = max(0, counter[0] - 2)  # minus the role chunk and [DONE], roughly
        if events:
            state.metrics.generated.labels(method=PASSTHROUGH).inc(events)
        state.record(plan.endpoint, PASSTHROUGH, status, t0)
        release()
        if nxt is not None and not nxt.done():
            nxt.cancel()  # the pending read ends; iter_stream's finally closes the upstream response
        else:  # (awaits last: a cancelled task may be interrupted again here)
            await upstream.aclose()
