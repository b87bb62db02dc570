"""Running a plan in a worker thread: caps, cancellation, live text for streaming.

Every request gets its own `CappedBackend`, a thin view of the shared backend that
* stops generation at the request's token cap (counting every stream the method opens,
  probes included), so no request can make the server generate unbounded work;
* raises `RequestCancelled` inside the worker as soon as the request was cancelled
  (client gone, timeout, shutdown); the method's streams are closed on the way out,
  which stops the engine (llama.cpp) or closes the upstream connection (HTTP). A stalled
  upstream sends no tokens, so its blocked reads poll the flag too (`abort_when`): the
  worker and its slot are free within a fraction of a second of the cancel;
* carries `on_text`, which `Chain.run` calls with reasoning/content deltas as they are
  produced, so the proxy can stream a method's output while the method decides.

Other models a method uses (the extra models the operator registered, e.g. `route`'s
`small_model`) reach it through the task's loader, `RequestModels`: it resolves names in
the server's `RegisteredLoader` and wraps each model as a sibling of the request's
`CappedBackend` (same cap, same cancellation). Nothing is looked up by anything but name.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, replace
from typing import Callable, Iterator

from ..backends.abortable import abort_when
from ..backends.base import BackendWrapper, BaseBackend, Chunk, SamplingParams, close_stream
from ..loading import ModelLoader, RegisteredLoader
from ..methods import PromptStyle, Task
from ..probe_file import LinearProbe
from ..readable import AnswerStream
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


class CappedBackend(BackendWrapper):
    """One request's view of the shared backend: its token cap, its cancellation, its `on_text`
    (see the module docstring); everything else is the shared backend's."""

    def __init__(self, inner: BaseBackend, cap: int, job: "Job", on_text: Callable[[str, str], None] | None = None,
                 budget: _Budget | None = None):
        super().__init__(inner)
        self._budget = budget or _Budget(cap)
        self.cap = cap
        self.job = job
        self.on_text = on_text

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
        with abort_when(self.job.check):  # may be an HTTP call to a stalled upstream
            return self.inner.encode(text)

    def count_tokens(self, text: str) -> int:
        with abort_when(self.job.check):
            return self.inner.count_tokens(text)

    def stream(self, prompt: str, params: SamplingParams) -> Iterator[Chunk]:
        self.job.check()
        b = self._budget
        remaining = b.cap - b.used
        if remaining <= 0:
            b.hit_cap = True
            return (c for c in [Chunk("", finish_reason="length")])  # a generator, like every stream
        if params.max_tokens > remaining:
            params = replace(params, max_tokens=remaining)
        with abort_when(self.job.check):
            return self._wrap(self.inner.stream(prompt, params))

    def _next(self, it: Iterator[Chunk]) -> Chunk | None:
        """The next chunk, or None at the end. A blocked upstream read inside `next` polls the
        cancel flag (`abort_when`): a stalled upstream cannot hold the worker past a cancel."""
        try:
            with abort_when(self.job.check):
                return next(it)
        except StopIteration:
            return None
        except Exception:
            if self.job.cancel_reason is not None:  # the failure is the abort's side effect
                raise RequestCancelled(self.job.cancel_reason) from None
            raise

    def _wrap(self, inner: Iterator[Chunk]) -> Iterator[Chunk]:
        b = self._budget
        it = iter(inner)
        try:
            while (chunk := self._next(it)) is not None:
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
            close_stream(inner)


class RequestModels(ModelLoader):
    """The task's loader inside a request: registered names only, each model capped and
    cancelled with the request (a sibling of its `CappedBackend`)."""

    def __init__(self, registered: RegisteredLoader, backend: CappedBackend):
        self.registered = registered
        self.backend = backend

    def load(self, name: str) -> BaseBackend:
        return self.backend.sibling(self.registered.load(name))

    def probe(self, name: str) -> LinearProbe:
        return self.registered.probe(name)


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

    def __init__(self, plan: Plan, backend: BaseBackend, metrics, loop: asyncio.AbstractEventLoop, streaming: bool,
                 models: RegisteredLoader | None = None):
        self.plan = plan
        self.backend = backend
        self.models = models if models is not None else RegisteredLoader()  # default: nothing else may load
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
                # What the client reads (natural form): the emulated split and plain answer text
                # applied to the deltas, as `streaming.shown_content` applies them to the result.
                fam = family_for(self.backend.model_id, self.backend.family_override)
                shaper = AnswerStream(fam.emulated, natural=self.plan.answer_format == "natural" and not self.plan.passthrough)
                on_text = (lambda ch, t, i=i, sh=shaper: [self.emit("delta", i, c, x) for c, x in sh.feed(ch, t)]) if live else None
                wb = CappedBackend(self.backend, self.plan.cap, self, on_text)
                if self.plan.passthrough:
                    res = run_passthrough(self.plan, wb, i)
                else:
                    res = run_method(self.plan, wb, i, RequestModels(self.models, wb))
                if live:
                    for c, x in shaper.flush():
                        self.emit("delta", i, c, x)
                out = ChoiceOutput(i, res, wb.used, wb.hit_cap, self.backend.approximate_counts)
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


def run_method(plan: Plan, backend: BaseBackend, i: int, models: ModelLoader) -> Result:
    task = Task.create(plan.question, backend, seed=plan.seed + i, temperature=plan.temperature, models=models,
                       answer_format=plan.answer_format)
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
