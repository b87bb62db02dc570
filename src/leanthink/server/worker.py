"""Running a plan in a worker thread: caps, cancellation, live text for streaming.

Every request gets its own `CappedBackend`, a thin view of the shared backend that
* stops generation at the request's token cap (counting every stream the method opens,
  probes included), so no request can make the server generate unbounded work;
* raises `RequestCancelled` inside the worker as soon as the request was cancelled
  (client gone, timeout, shutdown); the method's streams are closed on the way out,
  which stops the engine (llama.cpp) or closes the upstream connection (HTTP);
* carries `on_text`, which `Chain.run` calls with reasoning/content deltas as they are
  produced, so the proxy can stream a method's output while the method decides.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator

from ..backends.base import BaseBackend, Chunk, SamplingParams
from ..methods import PromptStyle, Task
from ..reasoning import StreamSplitter, family_for
from ..result import Result, Usage
from .planning import Plan

log = logging.getLogger("leanthink.server")


class RequestCancelled(BaseException):
    """Raised inside the worker when its request was cancelled. A BaseException so that no
    method's `except Exception` can swallow it."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class _Budget:
    """Tokens one choice may still generate, shared by every backend it uses."""

    def __init__(self, cap: int):
        self.cap = cap
        self.used = 0
        self.hit_cap = False
        self.lock = threading.Lock()  # sampling methods may stream from several threads


class CappedBackend(BaseBackend):
    def __init__(self, inner: BaseBackend, cap: int, job: "Job", on_text: Callable[[str, str], None] | None = None,
                 budget: _Budget | None = None):
        self._inner = inner
        self._budget = budget or _Budget(cap)
        self.cap = cap
        self.job = job
        self.on_text = on_text
        self.name = inner.name
        self.model_id = inner.model_id
        self.capabilities = inner.capabilities
        self.family_override = getattr(inner, "family_override", None)

    def __getattr__(self, name: str) -> Any:  # chat_template, n_ctx, ... of the real backend
        if name.startswith("__") or name in ("_inner", "_budget"):
            raise AttributeError(name)
        return getattr(self._inner, name)

    @property
    def used(self) -> int:
        return self._budget.used

    @property
    def hit_cap(self) -> bool:
        return self._budget.hit_cap

    def sibling(self, other: BaseBackend) -> "CappedBackend":
        """Another model the method loads (collaboration methods): same cap, same cancellation."""
        return CappedBackend(other, self.cap, self.job, None, self._budget)

    def encode(self, text: str) -> list[int]:
        return self._inner.encode(text)

    def count_tokens(self, text: str) -> int:
        return self._inner.count_tokens(text)

    def render_chat(self, messages, add_generation_prompt: bool = True, **kwargs) -> str:
        return self._inner.render_chat(messages, add_generation_prompt=add_generation_prompt, **kwargs)

    def close(self) -> None:  # the shared backend outlives the request
        pass

    def stream(self, prompt: str, params: SamplingParams) -> Iterator[Chunk]:
        self.job.check()
        b = self._budget
        remaining = b.cap - b.used
        if remaining <= 0:
            b.hit_cap = True
            return iter([Chunk("", finish_reason="length")])
        if params.max_tokens > remaining:
            params = replace(params, max_tokens=remaining)
        return self._wrap(self._inner.stream(prompt, params))

    def _wrap(self, inner: Iterator[Chunk]) -> Iterator[Chunk]:
        b = self._budget
        try:
            for chunk in inner:
                self.job.check()
                n = chunk.n_tokens
                with b.lock:
                    over = b.used + n > b.cap
                    if not over:
                        b.used += n
                if over:  # another stream of this choice used the rest of the cap
                    b.hit_cap = True
                    return
                self.job.count(n)
                yield chunk
                if b.used >= b.cap:
                    b.hit_cap = chunk.finish_reason != "stop"
                    return
        finally:
            close = getattr(inner, "close", None)
            if close:
                close()


@dataclass
class ChoiceOutput:
    index: int
    result: Result
    generated: int
    """Tokens the engine generated for this choice (thinking, answer, probes...)."""
    hit_cap: bool
    approximate_counts: bool = False
    """The backend estimated token counts (an HTTP server without a tokenizer endpoint)."""


class Job:
    """One request's work. `run` executes in a worker thread; the event loop reads `queue`."""

    def __init__(self, plan: Plan, backend: BaseBackend, metrics, loop: asyncio.AbstractEventLoop, streaming: bool):
        self.plan = plan
        self.backend = backend
        self.metrics = metrics
        self.loop = loop
        self.queue: asyncio.Queue | None = asyncio.Queue() if streaming else None
        self.cancel_reason: str | None = None
        self.cancelled_in_worker: str | None = None
        self.outputs: list[ChoiceOutput] = []
        self.created = time.perf_counter()
        self.first_token_at: float | None = None
        self.finished = False

    # -- called from any thread ------------------------------------------------------
    def cancel(self, reason: str) -> None:
        if self.cancel_reason is None and not self.finished:
            self.cancel_reason = reason

    # -- called from the worker thread -----------------------------------------------
    def check(self) -> None:
        if self.cancel_reason is not None:
            raise RequestCancelled(self.cancel_reason)

    def count(self, n: int) -> None:
        if n:
            self.metrics.generated.labels(method=self.plan.method_label).inc(n)
            if self.first_token_at is None:
                self.first_token_at = time.perf_counter()

    def emit(self, *event) -> None:
        if self.queue is not None:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, event)

    def run(self) -> list[ChoiceOutput] | None:
        """Returns the outputs, or None when cancelled; other errors propagate."""
        try:
            for i in range(self.plan.n):
                live = self.queue is not None and self.plan.live
                on_text = (lambda ch, t, i=i: self.emit("delta", i, ch, t)) if live else None
                wb = CappedBackend(self.backend, self.plan.cap, self, on_text)
                _current.backend = wb
                try:
                    res = run_passthrough(self.plan, wb, i) if self.plan.passthrough else run_method(self.plan, wb, i)
                finally:
                    _current.backend = None
                out = ChoiceOutput(i, res, wb.used, wb.hit_cap, bool(getattr(self.backend, "approximate_counts", False)))
                self.outputs.append(out)
                self.metrics.record_result(self.plan.method_label, res)
                self.emit("choice", out)
            self.emit("done", None)
            return self.outputs
        except RequestCancelled as exc:
            self.cancelled_in_worker = exc.reason
            self.metrics.cancelled.labels(reason=exc.reason).inc()
            self.emit("cancelled", exc.reason)
            return None
        except BaseException as exc:
            self.emit("error", exc)
            raise
        finally:
            self.finished = True


_current = threading.local()
"""The request backend of the worker thread, while a method runs in it."""


def install_backend_hook() -> None:
    """Methods that load a second model (collaboration: `route`, `spec-reason`) call
    `leanthink.api.get_backend`; inside a request's worker thread the model they get is
    wrapped with the same request's token cap, cancellation and live token count. Outside
    a request (startup, other threads) `get_backend` is unchanged. Idempotent."""
    from .. import api

    if getattr(api.get_backend, "_leanthink_request_scoped", False):
        return
    original = api.get_backend

    def get_backend(model: str | None = None, *, quiet: bool = False) -> BaseBackend:
        backend = original(model, quiet=quiet)
        current = getattr(_current, "backend", None)
        if current is None or isinstance(backend, CappedBackend):
            return backend
        return current.sibling(backend)

    get_backend._leanthink_request_scoped = True  # type: ignore[attr-defined]
    get_backend.__doc__ = original.__doc__
    api.get_backend = get_backend


def run_method(plan: Plan, backend: BaseBackend, i: int) -> Result:
    task = Task.create(plan.question, backend, seed=plan.seed + i, temperature=plan.temperature)
    if plan.system:
        task = replace(task, style=PromptStyle(system_extra=plan.system))
    return plan.method(task)


def run_passthrough(plan: Plan, backend: CappedBackend, i: int) -> Result:
    """No method: the conversation (or raw prompt) goes to the model as is."""
    t0 = time.perf_counter()
    fam = family_for(backend.model_id, backend.family_override)
    if plan.endpoint == "chat":
        prompt = backend.render_chat(plan.messages, add_generation_prompt=True)
        splitter = None
        if fam.native_thinking:
            splitter = StreamSplitter(fam, started_inside=prompt.rstrip().endswith(fam.think_start))
    else:
        prompt, splitter = plan.prompt, None
    params = SamplingParams(max_tokens=plan.cap, temperature=plan.temperature, top_p=plan.top_p,
                            seed=plan.seed + i, stop=list(plan.stop))
    reasoning, content, finish = "", "", "stop"
    thinking_n = answer_n = 0
    emit = backend.on_text

    def take(pieces):
        nonlocal reasoning, content
        for ch, text in pieces:
            if ch == "reasoning":
                reasoning += text
            else:
                content += text
            if emit and text:
                emit(ch, text)

    for chunk in backend.stream(prompt, params):
        in_reasoning = splitter is not None and not splitter.closed
        take(splitter.feed(chunk.text) if splitter else [("content", chunk.text)])
        if in_reasoning:
            thinking_n += chunk.n_tokens
        else:
            answer_n += chunk.n_tokens
        if chunk.finish_reason:
            finish = chunk.finish_reason
    if splitter:
        take(splitter.flush())
    return Result(
        question=plan.question, method="passthrough", model=backend.model_id, backend=backend.name,
        emulated_thinking=False, answer=None, answer_text=content, reasoning=reasoning.strip(),
        finish_reason=finish, usage=Usage(prompt=backend.count_tokens(prompt), thinking=thinking_n, answer=answer_n),
        latency_s=time.perf_counter() - t0, prompt=prompt,
    )
