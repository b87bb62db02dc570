"""A generation cache: replay a stream that was already generated with the same model,
prompt and sampling parameters (seed included).

Why: comparing sampling methods is a paired experiment. `sc(k=8)`, `adaptive-sc`,
`esc`, `dsc`, `rpc`, `bom`, `bon` and `short-m@k` all draw sample i with seed
`seed + i`, so on one model they would generate the same chains; the papers evaluate
adaptive stopping by drawing from one pool of pre-generated samples for the same reason.
With the cache, the first method that needs a chain generates it for real and every
later method replays it, token by token, through the same code path (stop rules,
cancellation, logprob scoring). What a method *spends* does not change: its Result counts
every token it consumed, replayed or not.

What the cache does change is wall time, so it keeps the engine time of every stored
stream (time spent inside the engine's `next()`, not the caller's) and adds the recorded
time of each replayed chunk to `replayed_s`; the bench runner adds that to the method's
latency and says so in its trace. A stream is cacheable when it is deterministic given
its key: greedy (temperature 0) or seeded; streams that ask for hidden states are not
cached (they are large). A stream its reader closed early (at `\\boxed{`, an early exit,
a cancelled chain) is stored as a prefix: a later reader that stops at or before that
point replays it exactly; one that reads on gets the prefix and then a real continuation
from it (prefix continuation, the same call early-exit methods make), which lengthens the
stored stream. A reader that resumes a stream from its exact token ids (a `Continuation`
ending in generated ids: a chain going on after a probe) reads the same stored stream
from that point, so a probed chain and a plain one share one stream; on engines that take
token ids (`exact_continuation`) the stored prefix is continued from its ids, not its text. For a seeded sampler that continuation is a fresh draw of the rest of the
chain given its prefix, i.e. still a sample from the model.

`max_tokens` is not part of the key: with the same prompt, sampler and seed, a stream
capped at 256 tokens is the first 256 tokens of the same stream capped at 1,280. So
`budget(max_thinking=256)`, `elastic`, `deer`, `dynasor` and the first segment of
`concise-hint`/`inftythink` all read one stored thinking stream. A reader with a smaller
cap gets the stored tokens up to its cap, the last one marked `length` as the engine would
mark it; a reader with a larger cap than a stream that stopped at `length` gets the stored
tokens and then a real continuation.

Storage: SQLite (WAL, so several `--shard` processes share one file), one row per
stream, chunks as zlib-compressed JSON.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
import zlib
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable, Generator, Iterator

from .base import BackendWrapper, BaseBackend, Chunk, SamplingParams
from .continuation import Continuation


def cache_key(model_id: str, prompt: str, params: SamplingParams, *, with_cap: bool = False) -> str:
    """`with_cap=True` gives the key of caches written before the cap left the key (read-only
    fallback, so stores like `benchmarks/adaptive/generations.sqlite` keep replaying)."""
    p = asdict(params)
    p.pop("hidden_states", None)
    if not with_cap:
        p.pop("max_tokens", None)  # a cap only truncates the same stream (module docstring)
    blob = json.dumps({"model": model_id, "prompt": prompt, "params": p}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def _encode(chunks: list[Chunk]) -> bytes:
    rows = [[c.text, c.token_ids, c.logprob, c.top_logprobs, c.finish_reason] for c in chunks]
    return zlib.compress(json.dumps(rows, ensure_ascii=False).encode(), 6)


def _decode(blob: bytes) -> list[Chunk]:
    return [Chunk(text=t, token_ids=ids, logprob=lp, top_logprobs=top, finish_reason=fr)
            for t, ids, lp, top, fr in json.loads(zlib.decompress(blob))]


class GenerationCache:
    """The store behind `CachedBackend`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._conn() as c:
            c.execute("CREATE TABLE IF NOT EXISTS streams (key TEXT PRIMARY KEY, chunks BLOB NOT NULL, "
                      "engine_s REAL NOT NULL, n_tokens INTEGER NOT NULL, complete INTEGER NOT NULL, "
                      "created REAL NOT NULL)")

    def _conn(self) -> sqlite3.Connection:
        c = getattr(self._local, "conn", None)
        if c is None:
            c = sqlite3.connect(self.path, timeout=60)
            c.execute("PRAGMA journal_mode=WAL")
            self._local.conn = c
        return c

    def get(self, key: str) -> tuple[list[Chunk], float, bool] | None:
        """(chunks, engine seconds, complete?) of a stored stream."""
        row = self._conn().execute("SELECT chunks, engine_s, complete FROM streams WHERE key=?", (key,)).fetchone()
        return (_decode(row[0]), float(row[1]), bool(row[2])) if row else None

    def put(self, key: str, chunks: list[Chunk], engine_s: float, *, complete: bool) -> None:
        """Store (or lengthen) a stream; a shorter version never replaces a longer one."""
        n = sum(ch.n_tokens for ch in chunks)
        with self._conn() as c:
            c.execute("INSERT INTO streams VALUES (?,?,?,?,?,?) ON CONFLICT(key) DO UPDATE SET "
                      "chunks=excluded.chunks, engine_s=excluded.engine_s, n_tokens=excluded.n_tokens, "
                      "complete=excluded.complete, created=excluded.created WHERE excluded.n_tokens > streams.n_tokens",
                      (key, _encode(chunks), engine_s, n, int(complete), time.time()))

    def __len__(self) -> int:
        return self._conn().execute("SELECT COUNT(*) FROM streams").fetchone()[0]


class CachedBackend(BackendWrapper):
    """Wraps a backend; `stream()` replays stored streams (see the module docstring)."""

    def __init__(self, inner: BaseBackend, cache: GenerationCache):
        super().__init__(inner)
        self.cache = cache
        self._lock = threading.Lock()
        self._replayed_s = 0.0
        self.replayed_tokens = 0
        self.generated_tokens = 0

    @property
    def replayed_s(self) -> float:
        """Recorded engine seconds of every replayed chunk (the runner reads the difference per item)."""
        return self._replayed_s

    def stream(self, prompt: str, params: SamplingParams) -> Iterator[Chunk]:
        if params.hidden_states or (params.temperature > 0 and params.seed is None):
            return self.inner.stream(prompt, params)
        # The sampled tokens' own logprobs cost nothing extra, and asking for them does not change
        # what is sampled: store them always, so `sc` (no logprobs) and `rpc`/`bon` (logprobs) share
        # one stream. A reader that did not ask for them gets chunks without them, as uncached.
        strip = params.logprobs is None and self.capabilities.logprobs
        gen_params = replace(params, logprobs=0) if strip else params
        if isinstance(prompt, Continuation) and prompt.tail_ids:
            # The stream of the prompt before the generated ids, read on after them: one stored
            # stream whoever reads it, paused and resumed (probes) or not.
            base = prompt.base()
            return self._stream(base, gen_params, self._key(base, gen_params), strip, prompt)
        return self._stream(prompt, gen_params, self._key(prompt, gen_params), strip)

    def _key(self, prompt: str, params: SamplingParams) -> str:
        text = prompt.key() if isinstance(prompt, Continuation) else prompt
        return cache_key(self.model_id, text, params)

    def _after(self, prompt: str, chunks: list[Chunk]) -> str:
        """The prompt that continues `prompt`'s stream after `chunks`: its exact ids where the
        engine takes them, else the text (the engine re-tokenizes it)."""
        text = "".join(c.text for c in chunks)
        if chunks and self.exact_continuation and all(c.token_ids for c in chunks):
            return Continuation.of(prompt).generated([t for c in chunks for t in c.token_ids], text)
        return prompt + text

    def _stream(self, prompt: str, params: SamplingParams, key: str, strip: bool,
                resume: Continuation | None = None) -> Iterator[Chunk]:
        """Replay what is stored under `key` (up to the reader's cap), then generate the rest and
        store it. `resume`: the reader continues `prompt`'s stream after `resume.tail_ids`."""
        def out(c: Chunk) -> Chunk:
            return replace(c, logprob=None, top_logprobs=None) if strip else c

        hit = self.cache.get(key)
        if hit is None and not isinstance(prompt, Continuation):
            hit = self.cache.get(cache_key(self.model_id, prompt, params, with_cap=True))
        chunks, engine_s, complete = hit if hit is not None else ([], 0.0, False)
        start = 0
        if resume is not None:  # the reader's ids must be the stored stream's start
            start = _after_ids(chunks, resume.tail_ids)
            if start is None:  # not the stored stream, or not all of it is stored: generate, do not store
                yield from self._generate(resume, params, out)
                return
        if chunks and chunks[-1].finish_reason == "length":
            complete = False  # it stopped at its reader's cap, not on its own: a larger cap reads on
        used, capped = yield from self._replay(chunks, start, params.max_tokens, complete, engine_s, out)
        if capped or complete:
            return
        if chunks:  # a stored prefix (its first reader stopped there): continue it from the prefix
            chunks[-1] = replace(chunks[-1], finish_reason=None)
            prompt, params = self._after(prompt, chunks), replace(params, max_tokens=params.max_tokens - used)
        yield from self._generate(prompt, params, out, store=(key, chunks, engine_s))

    def _replay(self, chunks: list[Chunk], start: int, budget: int, complete: bool, engine_s: float,
                out: Callable[[Chunk], Chunk]) -> Generator[Chunk, None, tuple[int, bool]]:
        """Yield the stored chunks from `start` that fit the reader's cap `budget`; returns
        (tokens replayed, whether the cap cut the stream)."""
        per = engine_s / max(len(chunks), 1)
        used, take = 0, start
        for c in chunks[start:]:  # how many stored chunks fit this reader's cap
            if used + c.n_tokens > budget:
                break
            used += c.n_tokens
            take += 1
        capped = take < len(chunks) or (used >= budget and not complete)
        for i in range(start, take):
            c = chunks[i]
            with self._lock:
                self._replayed_s += per
                self.replayed_tokens += c.n_tokens
            if i == take - 1 and capped:
                c = replace(c, finish_reason="length")  # the cap, as the engine would report it
            elif i == len(chunks) - 1 and not complete:
                c = replace(c, finish_reason=None)  # more follows from the continuation
            yield out(c)
        return used, capped

    def _generate(self, prompt: str, params: SamplingParams, out: Callable[[Chunk], Chunk],
                  store: tuple[str, list[Chunk], float] | None = None) -> Iterator[Chunk]:
        """Generate for real. `store` = (key, stored chunks, their engine seconds): append what
        is generated and store the longer stream, timing the engine's `next()` calls."""
        key, chunks, engine_s = store if store is not None else ("", [], 0.0)
        n_stored = len(chunks)
        gen = iter(self.inner.stream(prompt, params))
        exhausted = False
        try:
            while True:
                t0 = time.perf_counter()
                try:
                    c = next(gen)
                except StopIteration:
                    exhausted = True
                    break
                finally:
                    engine_s += time.perf_counter() - t0
                chunks.append(c)
                with self._lock:
                    self.generated_tokens += c.n_tokens
                yield out(c)
        finally:
            if not exhausted:
                close = getattr(gen, "close", None)
                if close is not None:
                    close()
            if store is not None and len(chunks) > n_stored:
                fin = chunks[-1].finish_reason
                done = fin is not None and fin != "length" or (exhausted and fin is None)
                self.cache.put(key, chunks, engine_s, complete=done)

    def close(self) -> None:  # unlike other wrappers, the cache owns what it wraps (the runner closes it)
        self.inner.close()


def _after_ids(chunks: list[Chunk], ids: list[int]) -> int | None:
    """The index of the first stored chunk after `ids`, when the stored stream starts with
    exactly those token ids; None when it does not (or not all of them are stored)."""
    start, n = 0, 0
    while start < len(chunks) and n < len(ids):
        n += len(chunks[start].token_ids)
        start += 1
    return start if [t for c in chunks[:start] for t in c.token_ids] == list(ids) else None
