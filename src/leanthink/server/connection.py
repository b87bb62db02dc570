"""Guards against slow, broken or hostile clients, below the endpoints.

* Headers: uvicorn closes idle keep-alive connections, but not a connection that never
  sends a request, nor one that sends half its headers and stalls (slowloris): each holds a
  socket forever. `guarded_http_protocol` adds a deadline for the request head.
* Body: `read_body` bounds the size (413) and the time (408) of the upload; a client that
  disconnects mid-upload is `ClientGone` (counted as a disconnect, not a server error).
* JSON: `parse_json_object` turns input that used to crash deeper layers into a 400:
  nesting too deep for the parser (RecursionError) or for anything downstream, and lone
  UTF-16 surrogates (`"\\ud800"`), which are valid JSON escapes but not text: they fail
  later when the prompt is encoded as UTF-8.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.requests import ClientDisconnect, Request

from .protocol import ApiError

MAX_JSON_DEPTH = 64
"""Deepest nesting of objects/arrays a request body may have (OpenAI bodies use under 10)."""


class ClientGone(Exception):
    """The client disconnected before we answered. `stage`: upload, waiting (queued or
    generating a non-streamed answer) or streaming; a label of the disconnect metric."""

    def __init__(self, stage: str = "waiting"):
        super().__init__(stage)
        self.stage = stage


async def read_body(request: Request, *, limit: int, timeout: float) -> bytes:
    """The request body: at most `limit` bytes (413), all of it within `timeout` seconds
    (408, and the connection is closed: the rest of a stalled upload is not waited for)."""
    cl = request.headers.get("content-length")
    if cl and cl.isdigit() and int(cl) > limit:
        raise ApiError(413, f"request body is {cl} bytes; the limit is {limit}", code="body_too_large")
    buf = bytearray()
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                buf += chunk
                if len(buf) > limit:
                    raise ApiError(413, f"request body exceeds the limit of {limit} bytes", code="body_too_large")
    except TimeoutError:
        raise ApiError(408, f"the request body did not arrive within {timeout:g}s", code="body_timeout",
                       headers={"Connection": "close"}) from None
    except ClientDisconnect:
        raise ClientGone("upload") from None
    return bytes(buf)


def parse_json_object(buf: bytes) -> dict[str, Any]:
    try:
        data = json.loads(buf)
    except RecursionError:
        raise _too_deep() from None
    except ValueError:
        raise ApiError(400, "the request body is not valid JSON", code="invalid_json") from None
    check_json(data)
    if not isinstance(data, dict):
        raise ApiError(422, "the request body must be a JSON object", code="invalid_schema")
    return data


def _too_deep() -> ApiError:
    return ApiError(400, f"the request body is nested too deeply (at most {MAX_JSON_DEPTH} levels of objects and "
                        "arrays)", code="invalid_json")


def check_json(data: Any) -> None:
    """400 unless nesting is at most MAX_JSON_DEPTH and every string and key is valid
    Unicode (no lone surrogate). Iterative: no recursion for a hostile depth to exhaust."""
    stack: list[tuple[Any, int, str]] = [(data, 0, "")]
    while stack:
        value, depth, path = stack.pop()
        if isinstance(value, str):
            _check_text(value, path)
            continue
        if not isinstance(value, (dict, list)):
            continue
        if depth >= MAX_JSON_DEPTH:
            raise _too_deep()
        if isinstance(value, dict):
            for k, v in value.items():
                _check_text(k, path)
                stack.append((v, depth + 1, f"{path}.{k}" if path else k))
        else:
            stack.extend((v, depth + 1, f"{path}[{i}]") for i, v in enumerate(value))


def _check_text(s: str, path: str) -> None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as exc:
        where = f" in {path[:200]}" if path else ""
        raise ApiError(400, f"invalid text{where}: a lone UTF-16 surrogate (\\u{ord(s[exc.start]):04x}) is not a "
                            "character; send valid Unicode", param=path[:200] or None, code="invalid_unicode") from None


# -- the request head ----------------------------------------------------------------------

_408_TEXT = b"request headers did not arrive in time\n"
_408 = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
        b"content-length: %d\r\n\r\n%s" % (len(_408_TEXT), _408_TEXT))


def guarded_http_protocol(header_timeout: float) -> type:
    """uvicorn's HTTP protocol (h11, or httptools when installed) with a deadline for the
    request head: a connection that has not sent complete headers within `header_timeout`
    seconds of opening (or of the first byte after a keep-alive pause) is closed, with a 408
    if it sent part of a request. Idle keep-alive connections stay uvicorn's business
    (`timeout_keep_alive`); a request body's deadline is enforced by `read_body`."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    class HeaderDeadlineProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
        _lt_timer: asyncio.TimerHandle | None = None
        _lt_partial = False

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._lt_arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._lt_waiting():
                self._lt_partial = True
                if self._lt_timer is None:
                    self._lt_arm()
            else:  # a request's head is complete: the endpoint's own timeouts apply now
                self._lt_disarm()

        def connection_lost(self, exc) -> None:
            self._lt_disarm()
            super().connection_lost(exc)

        def _lt_waiting(self) -> bool:
            cycle = self.cycle
            return cycle is None or cycle.response_complete

        def _lt_arm(self) -> None:
            self._lt_timer = self.loop.call_later(header_timeout, self._lt_expired)

        def _lt_disarm(self) -> None:
            if self._lt_timer is not None:
                self._lt_timer.cancel()
                self._lt_timer = None
            self._lt_partial = False

        def _lt_expired(self) -> None:
            self._lt_timer = None
            if self.transport is None or self.transport.is_closing() or not self._lt_waiting():
                return
            if self._lt_partial:
                self.transport.write(_408)
            self.transport.close()

    return HeaderDeadlineProtocol
