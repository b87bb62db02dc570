"""Running samples: one sample's view of the backend, and short-m@k's race of k chains.

`SampleBackend` wraps the task's backend for one sample: it counts what the sample's
streams generate, records the logprobs of sampled tokens (for scorers), and, in a race,
runs every engine call on one engine thread and waits for the sample's turn before each
token.

In-process engines (llama.cpp, transformers) have one model and, for llama.cpp, one KV
cache; a race then runs its k chains on one engine thread, round-robin `quantum` tokens at
a time (llama.cpp restarts a stream whose cache was taken by another stream, re-evaluating
only the divergent suffix). HTTP backends (`parallel_samples`) get one thread per chain.
Either way a cancelled chain's stream is closed, which stops generation. The interleaving
has a price on llama.cpp: a resumed chain re-evaluates its own tokens (prompt-speed, not
counted as generated tokens), so a small quantum costs wall time (k=4, 160-token chains on
2 CPU cores: quantum 16 took 2.2x the wall time of sc(k=4), quantum 64 about the same).
Restarted streams also re-seed the sampler, so short-m@k's chains are not token-identical
to sc's chains with the same seeds.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, Callable, Iterable

from ...backends.base import BackendWrapper, BaseBackend, Chunk, SamplingParams, close_stream
from .votes import Sample


class Cancelled(BaseException):
    """Raised inside a sample's thread when short-m@k cancels it (BaseException so no
    `except Exception` in an inner method can swallow it)."""


class Turns:
    """Whose stream may produce the next token: round-robin `quantum` tokens per sample
    (one in-process engine), or everyone at once (`free`, HTTP servers)."""

    def __init__(self, ids: Iterable[int], quantum: int, free: bool):
        self.cv = threading.Condition()
        self.order = list(ids)
        self.turn = self.order[0] if self.order else None
        self.quantum = quantum
        self.left = quantum
        self.free = free
        self.cancelled = False

    def wait(self, sid: int) -> None:
        with self.cv:
            while not self.cancelled and not self.free and self.turn != sid:
                self.cv.wait()
            if self.cancelled:
                raise Cancelled()

    def tick(self, sid: int, n: int) -> None:
        if self.free:
            return
        with self.cv:
            if self.turn != sid:
                return
            self.left -= max(n, 1)
            if self.left <= 0 and len(self.order) > 1:
                i = self.order.index(sid)
                self.turn = self.order[(i + 1) % len(self.order)]
                self.left = self.quantum
                self.cv.notify_all()
            elif self.left <= 0:
                self.left = self.quantum

    def leave(self, sid: int) -> None:
        """Call with `cv` held."""
        if sid not in self.order:
            return
        i = self.order.index(sid)
        self.order.remove(sid)
        if self.turn == sid:
            self.turn = self.order[i % len(self.order)] if self.order else None
            self.left = self.quantum
        self.cv.notify_all()


_END = object()


def _next_or_end(gen):
    try:
        return next(gen)
    except StopIteration:
        return _END


class SampleBackend(BackendWrapper):
    """One sample's view of the backend: counts what its streams generate, records the
    logprobs of sampled tokens, and (short-m@k) runs every engine call on one engine
    thread and waits for its turn before each token."""

    def __init__(self, inner: BaseBackend, *, sid: int = 0, logprobs: bool = False,
                 engine: ThreadPoolExecutor | None = None, turns: Turns | None = None):
        super().__init__(inner)
        self.sid, self.want_logprobs, self.engine, self.turns = sid, logprobs, engine, turns
        self.generated = 0
        self.logprobs: list[float] = []
        self.open_streams: list["ProxyStream"] = []

    def _call(self, fn: Callable[..., Any], *a: Any, **kw: Any) -> Any:
        """On the engine thread when there is one: an in-process engine's generator holds the
        engine's lock in the thread that runs it."""
        if self.engine is None:
            return fn(*a, **kw)
        return self.engine.submit(fn, *a, **kw).result()

    def stream(self, prompt: str, params: SamplingParams):
        sampled = params.temperature > 0
        if self.want_logprobs and sampled and params.logprobs is None:
            params = replace(params, logprobs=0)
        s = ProxyStream(self, prompt, params, sampled)
        self.open_streams.append(s)
        return s

    def close_streams(self) -> None:
        """Close every stream the inner method left open (e.g. one it was iterating when
        cancelled), on the engine thread where there is one."""
        for s in list(self.open_streams):
            s.close()
        self.open_streams.clear()


class ProxyStream:
    """One stream of a sample: waits for the sample's turn, counts, records logprobs."""

    def __init__(self, owner: SampleBackend, prompt: str, params: SamplingParams, sampled: bool):
        self.o, self.sampled, self.done = owner, sampled, False
        self.gen = owner._call(owner.inner.stream, prompt, params)

    def __iter__(self):
        return self

    def __next__(self) -> Chunk:
        o = self.o
        if self.done:
            raise StopIteration
        if o.turns is not None:
            try:
                o.turns.wait(o.sid)
            except Cancelled:
                self.close()  # stop the engine now, whatever the caller does with the exception
                raise
        chunk = o._call(_next_or_end, self.gen)
        if chunk is _END:
            self.done = True
            self._forget()
            raise StopIteration
        o.generated += chunk.n_tokens
        if o.want_logprobs and self.sampled and chunk.logprob is not None:
            o.logprobs.append(chunk.logprob)
        if o.turns is not None:
            o.turns.tick(o.sid, chunk.n_tokens)
        return chunk

    def close(self) -> None:
        if self.done:
            return
        self.done = True
        self._forget()
        self.o._call(close_stream, self.gen)  # on the engine thread: the generator holds the engine's lock there

    def _forget(self) -> None:
        try:
            self.o.open_streams.remove(self)
        except ValueError:
            pass


RunSample = Callable[[int, "ThreadPoolExecutor | None", Turns], Sample]


def race(k: int, m: int, *, quantum: int, free: bool, seed: int, run_sample: RunSample) -> tuple[list[Sample], list[int]]:
    """Start samples 0..k-1 at once (`run_sample(i, engine, turns)`); as soon as m have
    finished, cancel the others (their next token raises `Cancelled`, their streams are
    closed). Returns every started sample (index order) and the finished indices in the
    order they finished. `free`: one thread per chain (HTTP); else one engine thread,
    round-robin `quantum` tokens. The first error of any chain is raised here."""
    engine = None if free else ThreadPoolExecutor(1, thread_name_prefix="leanthink-engine")
    turns = Turns(range(k), quantum, free)
    samples: list[Sample | None] = [None] * k
    finished: list[int] = []
    errors: list[BaseException] = []
    running = [k]

    def work(i: int) -> None:
        s = Sample(i, seed + i, status="error")
        try:
            s = run_sample(i, engine, turns)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(exc)
            s.error = str(exc)
        finally:
            with turns.cv:
                samples[i] = s
                if s.status == "done" and s.result is not None:
                    finished.append(i)
                    if len(finished) >= m:
                        turns.cancelled = True  # every other chain stops at its next token
                running[0] -= 1
                turns.leave(i)

    threads = [threading.Thread(target=work, args=(i,), name=f"leanthink-sample-{i}", daemon=True) for i in range(k)]
    try:
        for t in threads:
            t.start()
        with turns.cv:
            while len(finished) < m and running[0] > 0:
                turns.cv.wait()
            turns.cancelled = True
            turns.cv.notify_all()
        for t in threads:
            t.join()
    finally:
        if engine is not None:
            engine.shutdown(wait=True)
    if errors:
        raise errors[0]
    return [s for s in samples if s is not None], finished
