"""Pass-through to an OpenAI-compatible upstream: the request body is relayed (model name
replaced by the upstream's, token cap enforced) with an async HTTP client, without a worker
thread, so the proxy adds as little latency as possible. A closed client connection closes
the upstream one, which stops generation there.

Errors: only what a second try can fix is retried (no answer, 502/503/504), with the
policy the HTTP backend uses (`backends/sse.py`, which also parses the events). Any other
upstream error (a 400 for a bad field, a 500 from its handler, a 429) reaches the client
once, with the upstream's status and error fields (redacted; an upstream 401/403 is about
the operator's key, not the client's, so it becomes a 502). A stream that fails or ends
without `data: [DONE]` gets an error event (if it failed) and `data: [DONE]`, like method
streams, so clients stop waiting.
"""

from __future__ import annotations

import asyncio
import json
import time
from contextlib import aclosing
from typing import Any, AsyncIterator

import httpx

from ..backends import sse as events
from .protocol import SSE_DONE, ApiError, sse

_ERROR_BODY_LIMIT = 64 * 1024
HEALTH_TTL_S = 5.0
"""An upstream check is reused this long: `/health` is open, so clients cannot turn it into
a flood of upstream requests."""
HEALTH_TIMEOUT_S = 2.0


def _error_fields(data: bytes) -> tuple[str, str | None, str | None, Any]:
    """(message, type, param, code) from an upstream error body, whatever its shape."""
    text = data[:_ERROR_BODY_LIMIT].decode(errors="replace")
    try:
        obj = json.loads(text)
    except ValueError:
        return text.strip()[:1000] or "(empty body)", None, None, None
    err = obj.get("error") if isinstance(obj, dict) else None
    if isinstance(err, dict):
        typ, param, code = err.get("type"), err.get("param"), err.get("code")
        return (str(err.get("message") or json.dumps(err)[:1000]), typ if isinstance(typ, str) else None,
                param if isinstance(param, str) else None, code if isinstance(code, (str, int)) else None)
    if isinstance(err, str):
        return err[:1000], None, None, None
    if isinstance(obj, dict) and "detail" in obj:  # FastAPI-style validation errors
        return json.dumps(obj["detail"])[:1000], None, None, None
    return text.strip()[:1000], None, None, None


class Relay:
    def __init__(self, backend, *, max_connections: int, timeout: float):
        self.base_url = backend.base_url
        self.served = backend.served_model
        self.max_retries = getattr(backend, "max_retries", 2)
        self.shown_url = getattr(backend, "shown_url", self.base_url)
        self._health: tuple[float, bool, str] | None = None
        self._health_lock = asyncio.Lock()
        auth = backend.http.headers.get("Authorization")
        self.client = httpx.AsyncClient(
            headers={"Authorization": auth} if auth else {},
            timeout=httpx.Timeout(timeout, connect=5.0),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    def prepare(self, body: dict[str, Any], cap: int) -> dict[str, Any]:
        out = {k: v for k, v in body.items() if k != "leanthink"}
        out["model"] = self.served
        out.pop("max_completion_tokens", None)  # not every upstream knows it; max_tokens is universal
        out["max_tokens"] = cap
        return out

    async def _send(self, path: str, body: dict[str, Any], stream: bool) -> httpx.Response:
        url = self.base_url + path

        async def post() -> httpx.Response:
            return await self.client.send(self.client.build_request("POST", url, json=body), stream=stream)

        try:
            resp = await events.asend(post, events.RetryPolicy(self.max_retries))
        except events.Unanswered as exc:
            if isinstance(exc.cause, httpx.ConnectTimeout):
                raise ApiError(504, f"the upstream server at {self.shown_url} timed out: {exc.cause!r}",
                               code="upstream_timeout") from None
            raise ApiError(502, f"cannot reach the upstream server at {self.shown_url} after {exc.attempts} "
                                f"attempt(s): {exc.cause!r}", code="upstream_unavailable") from None
        except httpx.TimeoutException as exc:  # the upstream took the request but did not answer in time
            raise ApiError(504, f"the upstream server at {self.shown_url} timed out: {exc!r}", code="upstream_timeout") from None
        except httpx.HTTPError as exc:
            raise ApiError(502, f"upstream request to {self.shown_url} failed: {exc!r}", code="upstream_unavailable") from None
        if resp.status_code >= 400:
            raise await self._upstream_error(resp)
        return resp

    @staticmethod
    async def _upstream_error(resp: httpx.Response) -> ApiError:
        """The upstream's own error, status and fields kept (ApiError.body redacts the text)."""
        data = b""
        async with aclosing(resp):
            try:
                async for chunk in resp.aiter_bytes():
                    data += chunk
                    if len(data) > _ERROR_BODY_LIMIT:
                        break
            except httpx.HTTPError:  # a body cut short still says something: keep what came
                pass
        message, typ, param, code = _error_fields(data)
        status = resp.status_code
        headers = {"X-Upstream-Status": str(status)}
        if resp.headers.get("retry-after") and status in (429, 503):
            headers["Retry-After"] = resp.headers["retry-after"]
        if status in (401, 403):
            return ApiError(502, f"the upstream server refused the proxy's credentials ({status}): {message}",
                            code="upstream_auth", type="upstream_error", headers=headers)
        return ApiError(status, message, param=param, code=code if code is not None else "upstream_error",
                        type=typ, headers=headers)

    async def check(self) -> tuple[bool, str]:
        """Is the upstream answering? GET /models with a short timeout, reused for
        HEALTH_TTL_S, one check at a time however many `/health` requests arrive."""
        async with self._health_lock:
            cached = self._health
            if cached is not None and time.monotonic() - cached[0] < HEALTH_TTL_S:
                return cached[1], cached[2]
            try:
                r = await self.client.get(self.base_url + "/models", timeout=HEALTH_TIMEOUT_S)
                ok, detail = r.status_code < 400, ("ok" if r.status_code < 400 else f"upstream answered {r.status_code}")
                await r.aclose()
            except httpx.TimeoutException:
                ok, detail = False, "upstream timed out"
            except httpx.HTTPError:
                ok, detail = False, "upstream unreachable"
            self._health = (time.monotonic(), ok, detail)
            return ok, detail

    async def complete(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        resp = await self._send(path, body, stream=False)
        try:
            return resp.json()
        except ValueError:
            raise ApiError(502, f"upstream {self.base_url}{path} did not return JSON", code="upstream_error") from None

    async def open_stream(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return await self._send(path, body, stream=True)

    @staticmethod
    async def iter_stream(resp: httpx.Response, counter: list[int]) -> AsyncIterator[bytes]:
        """Relay the upstream's SSE events as they come (whole events only, so a failure never
        leaves half an event); count data events (≈ tokens) for metrics. The stream always
        ends with `data: [DONE]`: after an error event if the upstream failed, or added if
        the upstream closed without one."""
        splitter = events.EventSplitter()
        saw_done = False

        def seen(raw: bytes) -> None:
            nonlocal saw_done
            for event in events.split_events(raw):
                data = events.parse_event(event)[1]
                if data is not None:
                    counter[0] += 1
                    saw_done = saw_done or data.strip() == events.DONE

        async with aclosing(resp):  # closes the upstream response however the relay ends
            try:
                async for data in resp.aiter_raw():
                    whole = splitter.feed(data)
                    if whole:
                        seen(whole)
                        yield whole
                if splitter.rest.strip():  # the upstream closed mid-event: pass on what it sent, terminated
                    seen(splitter.rest)
                    yield splitter.rest + b"\n\n"
            except httpx.HTTPError as exc:
                yield sse({"error": {"message": f"the upstream stream failed: {type(exc).__name__}",
                                     "type": "upstream_error", "param": None, "code": "upstream_unavailable"}})
        if not saw_done:
            yield SSE_DONE
