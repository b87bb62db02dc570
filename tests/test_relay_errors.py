"""Upstream errors reach the client once and as they were (issue 12, defect 12), and `/health`
tells the truth about the upstream (defect 11).

* Retried: only what a second try can fix (no connection, 502/503/504). A 400 for a bad
  field or a 500 from the upstream's handler is relayed once, with its status and message.
* A pass-through stream always ends with `data: [DONE]`, also when the upstream failed or
  closed without one; an error never leaves half an event on the wire.

Fast tests drive `Relay` and `OpenAIBackend` over `httpx.MockTransport`; the slow ones put a
small fake upstream (an HTTP server in a thread: the upstream is not what is tested) behind a
real `leanthink serve` process and count the requests it receives.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from leanthink.errors import BackendUnavailableError
from leanthink.server.protocol import ApiError

from .conftest import free_port, wait_http

BAD_FIELD = {"error": {"message": "presence_penalty: Input should be a valid number", "type": "invalid_request_error",
                       "param": "presence_penalty", "code": "invalid_value"}}
CRASH = {"error": {"message": "internal error in the sampler", "type": "server_error", "param": None, "code": None}}
CHUNK = b'data: {"id":"x","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n'


# -- Relay and OpenAIBackend over a mock transport (fast) -----------------------------------


class Counting:
    """A MockTransport handler that answers from a list (the last answer repeats) and counts."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.hits = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.hits += 1
        a = self.answers[min(self.hits, len(self.answers)) - 1]
        if isinstance(a, Exception):
            raise a
        return a


def _relay(handler, max_retries: int = 2):
    from leanthink.server.relay import Relay

    backend = SimpleNamespace(base_url="http://up/v1", served_model="m", max_retries=max_retries,
                              http=SimpleNamespace(headers={}), shown_url="http://up/v1")
    relay = Relay(backend, max_connections=4, timeout=10)
    relay.client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return relay


def _send(relay, stream: bool = False):
    async def go():
        try:
            return await relay._send("/chat/completions", {"model": "m"}, stream=stream)
        finally:
            await relay.client.aclose()

    return asyncio.run(go())


@pytest.mark.parametrize("status, body", [(400, BAD_FIELD), (422, BAD_FIELD), (500, CRASH), (404, CRASH)])
def test_relay_passes_a_final_upstream_error_on_once(status, body):
    h = Counting(httpx.Response(status, json=body))
    with pytest.raises(ApiError) as exc:
        _send(_relay(h))
    assert h.hits == 1  # not retried
    err = exc.value
    assert err.status == status and err.message == body["error"]["message"]
    assert err.param == body["error"]["param"] and err.type == body["error"]["type"]
    assert err.headers["X-Upstream-Status"] == str(status)


def test_relay_retries_503_then_relays_it():
    h = Counting(httpx.Response(503, json={"error": {"message": "loading model"}}, headers={"Retry-After": "7"}))
    with pytest.raises(ApiError) as exc:
        _send(_relay(h, max_retries=2))
    assert h.hits == 3
    assert exc.value.status == 503 and exc.value.message == "loading model"
    assert exc.value.headers["Retry-After"] == "7"


def test_relay_retry_recovers():
    h = Counting(httpx.Response(502, text="bad gateway"), httpx.Response(200, json={"ok": True}))
    assert _send(_relay(h)).status_code == 200 and h.hits == 2


def test_relay_connection_refused_is_502_after_retries():
    h = Counting(httpx.ConnectError("refused"))
    with pytest.raises(ApiError) as exc:
        _send(_relay(h, max_retries=1))
    assert h.hits == 2 and exc.value.status == 502 and exc.value.code == "upstream_unavailable"


def test_relay_upstream_auth_failure_is_not_the_clients_401():
    h = Counting(httpx.Response(401, json={"error": {"message": "Invalid API key sk-WRONG-KEY-1"}}))
    with pytest.raises(ApiError) as exc:
        _send(_relay(h))
    assert h.hits == 1 and exc.value.status == 502 and exc.value.code == "upstream_auth"


def test_relay_error_body_shapes():
    from leanthink.server.relay import _error_fields

    assert _error_fields(b"plain failure\n")[0] == "plain failure"
    assert _error_fields(b'{"error": "just a string"}')[0] == "just a string"
    assert "presence_penalty" in _error_fields(b'{"detail": [{"loc": ["body", "presence_penalty"]}]}')[0]
    assert _error_fields(b"")[0] == "(empty body)"


class _Stream(httpx.AsyncByteStream):
    def __init__(self, parts, fail: bool):
        self.parts, self.fail = parts, fail

    async def __aiter__(self):
        for p in self.parts:
            yield p
        if self.fail:
            raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")


def _relay_stream(parts, fail: bool) -> bytes:
    from leanthink.server.relay import Relay

    async def go():
        resp = httpx.Response(200, stream=_Stream(parts, fail))
        out = b""
        async for b in Relay.iter_stream(resp, [0]):
            out += b
        return out

    return asyncio.run(go())


def _events(raw: bytes) -> list[str]:
    return [e.strip() for e in raw.decode().replace("\r\n", "\n").split("\n\n") if e.strip()]


def test_stream_failing_mid_event_ends_with_error_and_done():
    out = _relay_stream([CHUNK, b'data: {"id":"x","choi'], fail=True)
    ev = _events(out)
    assert ev[0] == CHUNK.decode().strip()
    assert json.loads(ev[1][5:])["error"]["code"] == "upstream_unavailable"  # no half event before it
    assert ev[-1] == "data: [DONE]" and len(ev) == 3


def test_stream_closed_without_done_gets_done():
    err = b'data: {"error": {"message": "context overflow", "code": 400}}\r\n\r\n'
    ev = _events(_relay_stream([CHUNK, err], fail=False))
    assert ev[-1] == "data: [DONE]" and "context overflow" in ev[-2]


def test_stream_with_done_is_unchanged():
    raw = CHUNK + b"data: [DONE]\n\n"
    assert _relay_stream([raw[:30], raw[30:77], raw[77:]], fail=False) == raw


def test_stream_without_final_blank_line_is_terminated():
    out = _relay_stream([CHUNK, b"data: [DONE]\n"], fail=False)
    assert _events(out) == [CHUNK.decode().strip(), "data: [DONE]"]


def test_stream_counts_events_and_sees_done_only_as_an_event():
    """Events are parsed (`backends/sse.py`), not searched for substrings: text that says
    `data: [DONE]` neither counts as an event nor ends the stream."""
    from leanthink.server.relay import Relay

    tricky = b'data: {"choices":[{"delta":{"content":"a line data: [DONE] data:"}}]}\n\n'

    async def go(parts):
        counter = [0]
        out = b""
        async for b in Relay.iter_stream(httpx.Response(200, stream=_Stream(parts, False)), counter):
            out += b
        return out, counter[0]

    out, n = asyncio.run(go([CHUNK, tricky[:20], tricky[20:], b": ping\n\n"]))
    assert n == 2 and _events(out)[-1] == "data: [DONE]" and out.endswith(b"\n\n" + b"data: [DONE]\n\n")
    out, n = asyncio.run(go([CHUNK, b"data: [DONE]\n\n"]))
    assert n == 2 and out == CHUNK + b"data: [DONE]\n\n"


def test_health_check_is_cached_and_reports_down():
    h = Counting(httpx.Response(200, json={"data": []}), httpx.ConnectError("refused"))
    relay = _relay(h)

    async def go():
        first = [await relay.check() for _ in range(5)]
        relay._health = (relay._health[0] - 60, *relay._health[1:])  # expire the cache
        second = await relay.check()
        await relay.client.aclose()
        return first, second

    first, second = asyncio.run(go())
    assert first == [(True, "ok")] * 5 and h.hits == 2
    assert second == (False, "upstream unreachable")


def _backend(handler, max_retries: int = 2):
    from leanthink.backends.openai_http import OpenAIBackend

    b = OpenAIBackend.__new__(OpenAIBackend)
    b.base_url = b.shown_url = "http://up/v1"
    b.max_retries = max_retries
    b.http = httpx.Client(transport=httpx.MockTransport(handler))
    return b


@pytest.mark.parametrize("status, hits", [(500, 1), (400, 1), (404, 1), (503, 3), (502, 3), (504, 3)])
def test_backend_request_retries_only_gateway_errors(status, hits):
    h = Counting(httpx.Response(status, json=CRASH))
    r = _backend(h)._request("GET", "http://up/v1/models")
    assert r.status_code == status and h.hits == hits


@pytest.mark.parametrize("status, hits", [(500, 1), (400, 1), (503, 3)])
def test_backend_stream_retries_only_gateway_errors(status, hits):
    h = Counting(httpx.Response(status, json=CRASH))
    b = _backend(h)
    with pytest.raises(BackendUnavailableError, match=f"answered {status}: .*internal error in the sampler"):
        list(b._sse("http://up/v1/completions", {"prompt": "x"}, chat=False, keep_top=False))
    assert h.hits == hits


# -- a fake upstream behind a real `leanthink serve` (slow) -----------------------------------


class FakeUpstream:
    """An OpenAI-compatible upstream whose answer is chosen by a `mode:NAME` word in the
    request; counts POSTs per mode."""

    def __init__(self):
        self.hits: dict[str, int] = {}
        self.lock = threading.Lock()
        outer = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _json(self, status, obj):
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path == "/v1/models":
                    self._json(200, {"object": "list", "data": [{"id": "m", "object": "model"}]})
                else:
                    self._json(404, {"error": {"message": "not found"}})

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                if self.path not in ("/v1/chat/completions", "/v1/completions"):  # tokenize probes etc.
                    return self._json(404, {"error": {"message": "not found"}})
                m = re.search(r"mode:([a-z]+)", body)
                mode = m.group(1) if m else "ok"
                with outer.lock:
                    outer.hits[mode] = outer.hits.get(mode, 0) + 1
                if mode == "bad":
                    return self._json(400, BAD_FIELD)
                if mode == "crash":
                    return self._json(500, CRASH)
                if mode == "busy":
                    return self._json(503, {"error": {"message": "overloaded"}})
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()

                def chunk(b: bytes) -> None:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(b), b))
                    self.wfile.flush()

                chunk(CHUNK)
                if mode == "cut":  # the connection dies mid-body
                    self.wfile.write(b"40\r\ndata: {\"partial")
                    self.wfile.flush()
                    self.close_connection = True
                    return
                if mode == "errevent":  # an error event, then a clean close without [DONE]
                    chunk(b'data: {"error": {"message": "upstream gave up", "code": 500}}\n\n')
                else:
                    chunk(b"data: [DONE]\n\n")
                self.wfile.write(b"0\r\n\r\n")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Proxy:
    def __init__(self, upstream_port: int, tmp: Path):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = tmp / "serve.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "leanthink.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port),
             "--model", f"openai:http://127.0.0.1:{upstream_port}/v1#m?template=chatml&max_retries=2",
             "--default-method", "passthrough"],
            stdout=subprocess.DEVNULL, stderr=open(self.log, "wb"), env={**os.environ},
        )
        try:
            wait_http(self.base + "/health", self.proc, timeout=60)
        except Exception:
            self.stop()
            raise RuntimeError(self.log.read_text()[-3000:]) from None

    def chat(self, mode: str, stream: bool = False, model: str = "m", **kw):
        body = {"model": model, "messages": [{"role": "user", "content": f"hello mode:{mode}"}],
                "max_tokens": 8, "stream": stream, **kw}
        return httpx.post(self.base + "/v1/chat/completions", json=body, timeout=60)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    up = FakeUpstream()
    proxy = Proxy(up.port, tmp_path_factory.mktemp("relay"))
    yield up, proxy
    proxy.stop()
    up.stop()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_upstream_400_and_500_are_relayed_once(setup):
    up, proxy = setup
    r = proxy.chat("bad", presence_penalty="abc")
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"] == BAD_FIELD["error"]["message"]
    assert r.json()["error"]["param"] == "presence_penalty"
    r = proxy.chat("crash")
    assert r.status_code == 500 and r.json()["error"]["message"] == CRASH["error"]["message"], r.text
    r = proxy.chat("busy")
    assert r.status_code == 503 and r.json()["error"]["message"] == "overloaded", r.text
    assert up.hits["bad"] == 1 and up.hits["crash"] == 1 and up.hits["busy"] == 3


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_method_requests_do_not_retry_an_upstream_500(setup):
    up, proxy = setup
    before = up.hits.get("crash", 0)
    r = proxy.chat("crash", model="think/m")
    assert r.status_code == 502 and "internal error in the sampler" in r.json()["error"]["message"], r.text
    assert up.hits["crash"] == before + 1


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", ["errevent", "cut", "ok"])
def test_passthrough_stream_always_ends_with_done(setup, mode):
    _, proxy = setup
    r = proxy.chat(mode, stream=True)
    assert r.status_code == 200
    ev = _events(r.content)
    assert ev[0] == CHUNK.decode().strip()
    assert ev[-1] == "data: [DONE]" and ev.count("data: [DONE]") == 1
    if mode != "ok":
        assert "error" in json.loads(ev[-2][5:])


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_health_reports_the_upstream_going_down(tmp_path):
    up = FakeUpstream()
    proxy = Proxy(up.port, tmp_path)
    try:
        r = httpx.get(proxy.base + "/health", timeout=10)
        assert r.status_code == 200 and r.json()["status"] == "ok" and r.json()["upstream"] == "ok"
        assert r.json()["model"] == "m" and "127.0.0.1" not in r.text
        up.stop()
        deadline = time.time() + 15
        while time.time() < deadline:
            r = httpx.get(proxy.base + "/health", timeout=10)
            if r.status_code != 200:
                break
            time.sleep(0.5)
        assert r.status_code == 503 and r.json()["status"] == "degraded", r.text
        assert "127.0.0.1" not in r.text
    finally:
        proxy.stop()
