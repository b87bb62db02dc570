"""Talking to OpenAI-compatible servers: reading server-sent events, and when to try again.

One home for what the HTTP backend (`backends/openai_http.py`, sync) and the proxy's
pass-through relay (`server/relay.py`, async) both need, so that they parse events and
retry the same way:

* **Events.** `EventSplitter` cuts a byte stream into whole events (the relay forwards
  them unchanged, never half an event); `parse_event` reads one (`data:` lines joined,
  `event:` type, comments ignored, per the SSE format); `iter_payloads` turns a response's
  byte chunks into the JSON objects of its `data:` events, up to `data: [DONE]`. An error
  event (`{"error": ...}` or `event: error`) and a `data:` payload that is not JSON raise
  `StreamError`: skipping either would silently drop text.
* **Retries.** `RetryPolicy`: only what a second try can fix, i.e. the upstream sent no
  answer at all (connection refused or reset, connect timeout, closed before a status
  line; `NOT_ANSWERED`) or answered 502/503/504 (a proxy in front of a server that is
  restarting or overloaded). Anything else, a 400 for a bad field or a 500 from a crashed
  handler, is the upstream's final word. Backoff 0.2 s, 0.4 s, 0.8 s... `send`/`asend` run
  the policy around one request; after the status line arrives nothing is retried (text
  may already be on its way to the client).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterable, Iterator

import httpx

RETRY_STATUS = frozenset({502, 503, 504})
NOT_ANSWERED = (httpx.NetworkError, httpx.ConnectTimeout, httpx.RemoteProtocolError)
"""Raised before any answer: connect/read/write failures, connect timeout, the upstream
closing the connection without a status line (e.g. a stale keep-alive connection)."""
DONE = "[DONE]"
_SEPARATORS = (b"\r\n\r\n", b"\n\n", b"\r\r")


# -- events ----------------------------------------------------------------------------------
class StreamError(Exception):
    """The upstream reported an error inside the stream, or sent an event we cannot read.
    `message` is the upstream's text (not yet redacted)."""

    def __init__(self, message: str, payload: Any = None):
        super().__init__(message)
        self.message = message
        self.payload = payload


class EventSplitter:
    """Cuts a byte stream into whole SSE events, bytes unchanged (separators included)."""

    def __init__(self) -> None:
        self.rest = b""

    def feed(self, data: bytes) -> bytes:
        """The whole events completed by `data` (b"" if none yet)."""
        self.rest += data
        cut = max((i + len(sep) for sep in _SEPARATORS if (i := self.rest.rfind(sep)) >= 0), default=0)
        whole, self.rest = self.rest[:cut], self.rest[cut:]
        return whole


def split_events(raw: bytes) -> list[bytes]:
    """The events of a run of whole events (as `EventSplitter.feed` returns), each alone."""
    text = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return [e for e in text.split(b"\n\n") if e.strip()]


def parse_event(raw: bytes | str) -> tuple[str | None, str | None]:
    """(event type, data) of one event: `data:` lines joined with newlines (one optional
    space after the colon dropped); data None if the event has no `data:` line (a comment
    or keep-alive)."""
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    kind, data = None, []
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if not line or line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data.append(value)
        elif name == "event":
            kind = value
    return kind, ("\n".join(data) if data else None)


def payload(kind: str | None, data: str) -> Any:
    """The JSON object of a data event; StreamError for an error event or unreadable data."""
    try:
        obj = json.loads(data)
    except ValueError:
        raise StreamError(f"the server sent an event that is not JSON: {data[:200]!r}") from None
    if kind == "error" or (isinstance(obj, dict) and obj.get("error")):
        err = obj.get("error", obj) if isinstance(obj, dict) else obj
        msg = err.get("message") if isinstance(err, dict) else None
        raise StreamError(str(msg or err), obj)
    return obj


def iter_payloads(chunks: Iterable[bytes]) -> Iterator[Any]:
    """The JSON objects of a stream's data events, until `data: [DONE]` or the end."""
    splitter = EventSplitter()
    for chunk in chunks:
        for event in split_events(splitter.feed(chunk)):
            kind, data = parse_event(event)
            if data is None:
                continue
            if data.strip() == DONE:
                return
            yield payload(kind, data)
    kind, data = parse_event(splitter.rest)  # an upstream that ends without the blank line
    if data is not None and data.strip() != DONE:
        yield payload(kind, data)


# -- retries ---------------------------------------------------------------------------------
class Unanswered(Exception):
    """Every attempt failed before the upstream answered; `cause` is the last failure."""

    def __init__(self, cause: BaseException, attempts: int):
        super().__init__(f"no answer after {attempts} attempt(s): {cause!r}")
        self.cause = cause
        self.attempts = attempts


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 2
    base_delay_s: float = 0.2

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number `retry` (1, 2, ...)."""
        return self.base_delay_s * 2 ** (retry - 1)

    def again(self, resp: httpx.Response, attempt: int) -> bool:
        """Is this answer worth another try (attempt counts from 0)?"""
        return resp.status_code in RETRY_STATUS and attempt < self.max_retries


def send(request: Callable[[], httpx.Response], policy: RetryPolicy,
         sleep: Callable[[float], None] | None = None) -> httpx.Response:
    """`request()` under the policy: the first answer not worth retrying (the last one
    when retries run out), else `Unanswered`. Other exceptions propagate at once."""
    last: BaseException | None = None
    for attempt in range(policy.max_retries + 1):
        if attempt:
            (sleep or time.sleep)(policy.delay(attempt))
        try:
            resp = request()
        except NOT_ANSWERED as exc:
            last = exc
            continue
        if not policy.again(resp, attempt):
            return resp
        resp.close()  # discarded unread: the connection is not reused
    raise Unanswered(last, policy.max_retries + 1)  # type: ignore[arg-type]  (the loop only ends here on errors)


async def asend(request: Callable[[], Awaitable[httpx.Response]], policy: RetryPolicy,
                sleep: Callable[[float], Awaitable[None]] | None = None) -> httpx.Response:
    """`send` for an async client."""
    last: BaseException | None = None
    for attempt in range(policy.max_retries + 1):
        if attempt:
            await (sleep or asyncio.sleep)(policy.delay(attempt))
        try:
            resp = await request()
        except NOT_ANSWERED as exc:
            last = exc
            continue
        if not policy.again(resp, attempt):
            return resp
        await resp.aclose()
    raise Unanswered(last, policy.max_retries + 1)  # type: ignore[arg-type]
