"""Pass-through to an OpenAI-compatible upstream: the request body is relayed (model name
replaced by the upstream's, token cap enforced) with an async HTTP client, without a worker
thread, so the proxy adds as little latency as possible. Retries happen only before the
upstream answered (connection refused, 5xx); a closed client connection closes the
upstream one, which stops generation there."""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator

import httpx

from .protocol import ApiError

_CONNECT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError)


class Relay:
    def __init__(self, backend, *, max_connections: int, timeout: float):
        self.base_url = backend.base_url
        self.served = backend.served_model
        self.max_retries = getattr(backend, "max_retries", 2)
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
        last: Exception | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                await asyncio.sleep(0.2 * 2 ** (attempt - 1))
            try:
                req = self.client.build_request("POST", url, json=body)
                resp = await self.client.send(req, stream=stream)
            except httpx.TimeoutException as exc:
                if isinstance(exc, httpx.ConnectTimeout) and attempt < self.max_retries:
                    last = exc
                    continue
                raise ApiError(504, f"the upstream server at {self.base_url} timed out: {exc!r}", code="upstream_timeout") from None
            except _CONNECT_ERRORS as exc:
                last = exc
                continue
            except httpx.HTTPError as exc:
                raise ApiError(502, f"upstream request to {self.base_url} failed: {exc!r}", code="upstream_unavailable") from None
            if resp.status_code >= 500:
                text = (await resp.aread()).decode(errors="replace")[:300]
                await resp.aclose()
                last = RuntimeError(f"answered {resp.status_code}: {text}")
                continue
            if resp.status_code >= 400:
                data = await resp.aread()
                await resp.aclose()
                try:
                    err = json.loads(data)
                    msg = err.get("error", {}).get("message") if isinstance(err.get("error"), dict) else None
                except ValueError:
                    msg = None
                raise ApiError(resp.status_code, f"upstream refused the request: {msg or data[:300].decode(errors='replace')}",
                               code="upstream_error", type="invalid_request_error" if resp.status_code < 500 else None)
            return resp
        raise ApiError(502, f"cannot reach the upstream server at {self.base_url} after {self.max_retries + 1} "
                            f"attempt(s): {last}", code="upstream_unavailable")

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
        """Relay the upstream's SSE bytes as they come; count data events (≈ tokens) for metrics."""
        try:
            async for data in resp.aiter_raw():
                counter[0] += data.count(b"data:")
                yield data
        except httpx.HTTPError as exc:
            from .protocol import sse

            yield sse({"error": {"message": f"the upstream stream failed: {exc!r}", "type": "upstream_error",
                                 "param": None, "code": "upstream_unavailable"}})
        finally:
            await resp.aclose()
