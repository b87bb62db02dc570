"""The library entry points: `solve`, `solve_many`, `stream_solve`.

All three take the same arguments (method spec or `Method`, `model=` string or `backend=`,
`budget=`, `seed=`, `temperature=`, `system=`, `answer_format=`, method parameters as
keywords), load a model once per model string (`get_backend`) and return `Result`s. Errors
a caller can cause are `LeanthinkError`s phrased for Python callers (the CLI words its own).
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Iterator, Sequence

from .backends.base import BackendWrapper, BaseBackend, Chunk, SamplingParams, closing_stream
from .errors import ConfigError
from .loading import ModelLoader, default_loader
from .methods import Method, PromptStyle, Task, get_method
from .readable import AnswerStream, check_answer_format, plain, remainder
from .result import Result

#: The library loader's cache of loaded backends (model string -> backend; a small LRU).
_BACKENDS = default_loader().cache


def get_backend(model: str | None = None, *, quiet: bool = False) -> BaseBackend:
    """Load a backend once per model string and reuse it (loading weights is slow).

    The same cache serves the models that methods load in the library (`route`'s
    `small_model`...): see `leanthink.loading.LocalLoader`."""
    return default_loader().backend(model, quiet=quiet)


def resolve_method(method: str | Method, budget: int | None = None, *, budget_name: str = "budget=",
                   **params: Any) -> Method:
    """The method for a spec (or a `Method` as is), with `budget` set on its token-budget
    parameter. `budget_name` is how the caller spells the budget in error messages (the CLI
    passes `--budget`)."""
    if isinstance(method, Method):
        if budget is not None or params:
            raise ConfigError("a Method instance carries its own parameters: put the budget and parameters "
                              "in it (get_method('budget', max_thinking=256)) or pass the method as a spec string")
        return method
    if not isinstance(method, str):
        raise ConfigError(f"method must be a spec string such as 'think' or 'budget(max_thinking=256)', "
                          f"or a Method, got {type(method).__name__}")
    m = get_method(method, **params)
    if budget is not None:
        if isinstance(budget, bool) or not isinstance(budget, int) or budget <= 0:
            raise ConfigError(f"budget must be a positive integer number of tokens, got {budget!r}")
        target = m.budget_target()
        if target.budget_param is None:
            raise ConfigError(f"method '{target.name}' has no token budget; drop {budget_name} or pick a method "
                              "that has one, e.g. 'budget' or 'think'")
        m = m.with_budget(budget)
    return m


def _task(question: Any, be: BaseBackend, *, seed: int, temperature: float, system: str | None,
          models: ModelLoader | None, answer_format: str) -> Task:
    if isinstance(question, (list, tuple)):
        raise ConfigError(f"solve() answers one question, got a {type(question).__name__} of {len(question)}; "
                          "use solve_many(questions) for several")
    if system is not None and not isinstance(system, str):
        raise ConfigError(f"system must be a string, got {type(system).__name__}")
    task = Task.create(question, be, seed=seed, temperature=temperature, models=models, answer_format=answer_format)
    if system and system.strip():
        task = replace(task, style=PromptStyle(system_extra=system.strip()))
    return task


def solve(
    question: str,
    method: str | Method = "think",
    *,
    model: str | None = None,
    backend: BaseBackend | None = None,
    budget: int | None = None,
    seed: int = 0,
    temperature: float = 0.0,
    system: str | None = None,
    answer_format: str = "boxed",
    models: ModelLoader | None = None,
    **params: Any,
) -> Result:
    """Answer one question with an efficiency method.

    `system` is a system prompt (prompt-level methods add their instructions to it).
    `answer_format`: `boxed` (default; the grading form, as bench uses) or `natural` (when
    thinking is cut, the model writes its own final answer; `Result.content` reads it as
    text). `models` resolves the other models and probes a method names (`small_model`,
    `probe`); by default any model string or probe path (`leanthink.loading`).

    >>> r = solve("What is 17 * 3?", method="think")      # doctest: +SKIP
    >>> r.answer, r.usage.total                             # doctest: +SKIP
    """
    m = resolve_method(method, budget, **params)
    check_answer_format(answer_format)
    be = backend or get_backend(model)
    return m(_task(question, be, seed=seed, temperature=temperature, system=system, models=models,
                   answer_format=answer_format))


def solve_many(
    questions: Sequence[str],
    method: str | Method = "think",
    *,
    model: str | None = None,
    backend: BaseBackend | None = None,
    budget: int | None = None,
    seed: int = 0,
    temperature: float = 0.0,
    system: str | None = None,
    answer_format: str = "boxed",
    concurrency: int = 1,
    models: ModelLoader | None = None,
    **params: Any,
) -> list[Result]:
    """Answer several questions with one loaded model; results in the order of `questions`.

    `concurrency` questions run at once (threads): useful with an HTTP backend; an
    in-process engine (llama.cpp) runs one stream at a time, so there it only overlaps
    bookkeeping. Every question is checked before any runs; if one fails, the error names
    its index and the questions not started yet are not run."""
    if isinstance(questions, str) or not isinstance(questions, Sequence):
        raise ConfigError("solve_many() takes a list of questions; use solve(question) for one")
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ConfigError(f"concurrency must be a positive integer, got {concurrency!r}")
    m = resolve_method(method, budget, **params)
    check_answer_format(answer_format)
    for i, q in enumerate(questions):
        if not isinstance(q, str) or not q.strip():
            raise ConfigError(f"questions[{i}] must be a non-empty string, got {q!r}"[:200])
    be = backend or get_backend(model)
    tasks = [_task(q, be, seed=seed, temperature=temperature, system=system, models=models,
                   answer_format=answer_format) for q in questions]

    def run(i: int) -> Result:
        try:
            return m(tasks[i])
        except ConfigError as exc:
            raise type(exc)(f"questions[{i}]: {exc}") from exc

    if concurrency == 1 or len(tasks) <= 1:
        return [run(i) for i in range(len(tasks))]
    with ThreadPoolExecutor(min(concurrency, len(tasks)), thread_name_prefix="leanthink-solve") as ex:
        futures = [ex.submit(run, i) for i in range(len(tasks))]
        try:
            return [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            raise


# -- streaming -------------------------------------------------------------------------------
@dataclass
class StreamEvent:
    """One step of `stream_solve`: `reasoning` or `answer` text as it is produced, then `done`
    with the full `Result`."""

    kind: str
    text: str = ""
    result: Result | None = None


class _Stopped(BaseException):
    """The consumer closed the stream: unwinds the method (a BaseException, so that no
    method's `except Exception` swallows it)."""


class _LiveBackend(BackendWrapper):
    """The caller's backend plus `on_text` (which `Chain.run` reports text through) and a stop
    flag checked at every token, so closing the iterator stops generation."""

    def __init__(self, inner: BaseBackend, on_text, stopped: threading.Event):
        super().__init__(inner)
        self.on_text, self._stopped = on_text, stopped

    def stream(self, prompt: str, params: SamplingParams) -> Iterator[Chunk]:
        if self._stopped.is_set():
            raise _Stopped()
        with closing_stream(self.inner.stream(prompt, params)) as inner:
            for chunk in inner:
                if self._stopped.is_set():
                    raise _Stopped()
                yield chunk


def stream_solve(
    question: str,
    method: str | Method = "think",
    *,
    model: str | None = None,
    backend: BaseBackend | None = None,
    budget: int | None = None,
    seed: int = 0,
    temperature: float = 0.0,
    system: str | None = None,
    answer_format: str = "natural",
    models: ModelLoader | None = None,
    **params: Any,
) -> Iterator[StreamEvent]:
    """Answer one question and yield `StreamEvent`s: reasoning and answer text as the method
    produces it, then `done` with the `Result`.

    The default `answer_format` is `natural`, as the proxy's: the answer text is what a
    person reads (`Result.content`); `boxed` streams the grading form unchanged. Methods
    that run several chains (sampling, collaboration) send their chosen reasoning and answer
    at the end. Arguments are checked (and the model loaded) before this returns; closing
    the iterator early stops generation.

    >>> for ev in stream_solve("What is 17 * 3?"):     # doctest: +SKIP
    ...     print(ev.text, end="")
    """
    m = resolve_method(method, budget, **params)
    check_answer_format(answer_format)
    be = backend or get_backend(model)
    task = _task(question, be, seed=seed, temperature=temperature, system=system, models=models,
                 answer_format=answer_format)
    return _stream(m, task)


def _stream(m: Method, task: Task) -> Iterator[StreamEvent]:
    natural = task.answer_format == "natural"
    live = m.one_chain
    events: queue.Queue = queue.Queue()
    stopped = threading.Event()
    on_text = (lambda ch, text: events.put(("delta", ch, text))) if live else None
    live_task = replace(task, backend=_LiveBackend(task.backend, on_text, stopped))

    def work() -> None:
        try:
            events.put(("result", m(live_task)))
        except _Stopped:
            events.put(("stopped", None))
        except BaseException as exc:  # re-raised in the consumer's thread
            events.put(("error", exc))

    shaper = AnswerStream(emulated=task.family.emulated, natural=natural)
    sent = {"reasoning": "", "answer": ""}

    def out(pieces) -> Iterator[StreamEvent]:
        for ch, text in pieces:
            kind = "reasoning" if ch == "reasoning" else "answer"
            sent[kind] += text
            yield StreamEvent(kind, text)

    worker = threading.Thread(target=work, name="leanthink-stream", daemon=True)
    worker.start()
    try:
        while True:
            kind, *rest = events.get()
            if kind == "delta":
                yield from out(shaper.feed(*rest))
                continue
            if kind == "error":
                raise rest[0]
            if kind == "stopped":
                return
            res: Result = rest[0]
            yield from out(shaper.flush())
            if res.reasoning and not sent["reasoning"].strip():
                yield from out([("reasoning", res.reasoning)])
            final = plain(res.answer_text) if natural else res.answer_text
            yield from out([("content", remainder(final, sent["answer"]))] if remainder(final, sent["answer"]) else [])
            yield StreamEvent("done", result=res)
            return
    finally:
        stopped.set()
        worker.join()
