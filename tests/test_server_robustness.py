"""The proxy stays bounded when clients or the upstream misbehave (issue 12, defects 4, 5, 7, 8, 9).

* a stalled upstream (accepts, never answers) no longer holds its slot after the 504, nor
  blocks shutdown: the worker's blocked read polls the cancel flag and closes the connection;
* a pass-through stream from a trickling upstream is cut at `request_timeout`;
* client input that used to crash the server (500) is a 400 with a clear message: JSON
  nested too deep, a lone surrogate, a method spec nested 2,000 deep, a chat template that
  raises;
* a client that disconnects mid-upload is counted as a disconnect, not a server error;
* connections that stall their headers, their body, or idle, are closed.

The upstream here is a tiny HTTP server written in this file (it is not what is tested).
Fast tests drive the app in process (`httpx.ASGITransport`); the slow ones start
`leanthink serve` and talk to it over raw sockets.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from leanthink.backends import chat_template
from leanthink.server.app import create_app
from leanthink.server.config import ServerConfig

from .conftest import free_port, wait_http
from .fakes import ScriptedBackend

pytestmark = pytest.mark.timeout(120)

MAIN = "scripted-qwen2.5"
Q = [{"role": "user", "content": "What is 2+3?"}]


# -- the upstream: a fake OpenAI-compatible server that stalls or trickles -----------------------


class Upstream:
    """An OpenAI-compatible server on 127.0.0.1 that lists one model (`stall`) and whose
    generation endpoints stall (read the request, never answer) or trickle (an SSE event
    every `interval` seconds for `trickle_s` seconds). It records when the proxy closes a
    generation connection: that is the proof that cancelling reached the upstream."""

    def __init__(self, mode: str = "stall", trickle_s: float = 20.0, interval: float = 0.25, stall_s: float = 20.0):
        self.mode, self.trickle_s, self.interval, self.stall_s = mode, trickle_s, interval, stall_s
        self.posts = 0
        self.closed: list[float] = []
        self.release = threading.Event()
        self.got_post = threading.Event()
        up = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _json(self, status: int, obj: dict) -> None:
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path.rstrip("/").endswith("/models"):
                    self._json(200, {"object": "list", "data": [{"id": "stall", "object": "model"}]})
                else:
                    self._json(404, {"error": {"message": "not found"}})

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if not self.path.endswith("completions"):  # tokenize routes: "no tokenizer here"
                    return self._json(404, {"error": {"message": "not found"}})
                up.posts += 1
                up.got_post.set()
                self.close_connection = True
                up._stall(self.connection) if up.mode == "stall" else up._trickle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _stall(self, conn: socket.socket) -> None:
        """Until the proxy closes the connection (recorded), or `stall_s` passes (then we close
        it: a bounded stall keeps a proxy without the fix from hanging the test run)."""
        end = time.monotonic() + self.stall_s
        while not self.release.is_set() and time.monotonic() < end:
            if select.select([conn], [], [], 0.05)[0]:
                try:
                    data = conn.recv(1)
                except OSError:
                    data = b""
                if not data:
                    self.closed.append(time.monotonic())
                    return

    def _trickle(self, h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.end_headers()
        end, i = time.monotonic() + self.trickle_s, 0
        while time.monotonic() < end and not self.release.is_set():
            chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "stall",
                     "choices": [{"index": 0, "delta": {"content": f"w{i} "}, "finish_reason": None}]}
            try:
                h.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                h.wfile.flush()
            except OSError:
                self.closed.append(time.monotonic())
                return
            i += 1
            time.sleep(self.interval)
        try:
            h.wfile.write(b"data: [DONE]\n\n")
        except OSError:
            pass

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stalling():
    up = Upstream("stall", stall_s=8.0)
    yield up
    up.close()


@pytest.fixture
def trickling():
    up = Upstream("trickle")
    yield up
    up.close()


def upstream_model(up: Upstream, template: bool = True) -> str:
    return f"openai:{up.url}#stall" + ("?template=chatml" if template else "")


# -- in-process helpers ----------------------------------------------------------------------------


def make_app(backend=None, model: str = MAIN, **config):
    return create_app(ServerConfig(model=model, **config), backend=backend)


def run(app, fn):
    """Start the app (lifespan), run `await fn(client)`, stop the app."""

    async def go():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as c:
                return await fn(c)

    return asyncio.run(go())


def post(app, body=None, *, content: bytes | None = None) -> httpx.Response:
    async def fn(c):
        if content is not None:
            return await c.post("/v1/chat/completions", content=content, headers={"Content-Type": "application/json"})
        return await c.post("/v1/chat/completions", json=body)

    return run(app, fn)


def scripted() -> ScriptedBackend:
    return ScriptedBackend(lambda p: "2 and 3 make 5.\n\\boxed{5}", model_id=MAIN)


def assert_400(resp: httpx.Response, *words: str) -> dict:
    assert resp.status_code == 400, resp.text
    err = resp.json()["error"]
    assert err["type"] == "invalid_request_error"
    for w in words:
        assert w in err["message"], err["message"]
    assert "internal error" not in err["message"]
    return err


# -- defect 7: client mistakes are 400, not 500 ------------------------------------------------------


def test_deeply_nested_json_is_a_400():
    deep = b'{"model": "%s", "messages": [{"role": "user", "content": "hi"}], "metadata": %s1%s}' % (
        MAIN.encode(), b"[" * 100_000, b"]" * 100_000)
    assert_400(post(make_app(scripted()), content=deep), "nested too deeply")
    # Within the parser's reach but deeper than any OpenAI body: refused before anything else sees it.
    body = {"model": MAIN, "messages": Q, "leanthink": {"method": "think", "params": {}}}
    inner: dict = {}
    body["metadata"] = {"x": inner}
    for _ in range(200):
        inner["x"] = {}
        inner = inner["x"]
    assert_400(post(make_app(scripted()), body), "nested too deeply")


def test_a_lone_surrogate_in_content_is_a_400():
    content = b'{"model": "%s", "messages": [{"role": "user", "content": "2+3? \\ud800"}]}' % MAIN.encode()
    err = assert_400(post(make_app(scripted()), content=content), "surrogate")
    assert err["param"] == "messages[0].content"
    # A proper pair (an emoji) is fine.
    ok = b'{"model": "%s", "messages": [{"role": "user", "content": "2+3? \\ud83d\\ude00"}]}' % MAIN.encode()
    assert post(make_app(scripted()), content=ok).status_code == 200


def test_a_method_spec_nested_2000_deep_is_a_400():
    spec = "sc(inner=" * 2000 + "think" + ")" * 2000
    assert_400(post(make_app(scripted()), {"model": MAIN, "messages": Q, "leanthink": {"method": spec}}), "limit")
    assert_400(post(make_app(scripted()), {"model": f"{spec}/{MAIN}", "messages": Q}), "limit")
    nested = "sc(inner=" * 20 + "think" + ")" * 20  # short, but nested beyond the limit
    assert_400(post(make_app(scripted()), {"model": MAIN, "messages": Q, "leanthink": {"method": nested}}),
               "nests", "limit")
    ok = post(make_app(scripted()), {"model": MAIN, "messages": Q, "max_completion_tokens": 64,
                                     "leanthink": {"method": "sc(k=2,inner=budget(max_thinking=16))"}})
    assert ok.status_code == 200, ok.text


def test_spec_parser_bounds_are_config_errors():
    from leanthink.errors import ConfigError
    from leanthink.methods import get_method

    with pytest.raises(ConfigError, match="characters long"):
        get_method("think(" + "a=1," * 400 + "b=2)")
    with pytest.raises(ConfigError, match="nests parentheses"):
        get_method("budget" + "(" * 9 + ")" * 9)


class TemplatedBackend(ScriptedBackend):
    """A scripted backend whose prompts come from a real Jinja chat template."""

    TEMPLATE = ("{% for m in messages %}{% if m['role'] not in ['user', 'assistant'] %}"
                "{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}"
                "<{{ m['role'] }}>{{ m['content'] }}{% endfor %}<assistant>")

    def render_chat(self, messages, add_generation_prompt=True, **kw) -> str:
        return chat_template.render(self.TEMPLATE, messages, model_id=self.model_id,
                                    add_generation_prompt=add_generation_prompt, **kw)


@pytest.mark.parametrize("method", ["passthrough", "direct"])
def test_a_template_that_raises_is_a_clear_4xx(method):
    backend = TemplatedBackend(lambda p: "\\boxed{5}", model_id=MAIN)
    msgs = [{"role": "system", "content": "Be brief."}, *Q]
    resp = post(make_app(backend), {"model": MAIN, "messages": msgs, "leanthink": {"method": method}})
    assert 400 <= resp.status_code < 500, resp.text
    assert "Only user and assistant roles are supported!" in resp.json()["error"]["message"]
    ok = post(make_app(backend), {"model": MAIN, "messages": Q, "leanthink": {"method": method}})
    assert ok.status_code == 200, ok.text


# -- defect 4: a stalled upstream frees its slot at the timeout ---------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_a_stalled_upstream_frees_its_slot_at_the_timeout(stalling, stream):
    from leanthink.api import get_backend

    backend = get_backend(upstream_model(stalling), quiet=True)
    app = make_app(backend, model=upstream_model(stalling), max_concurrent=1, max_queue=0, request_timeout=1.0)
    state = app.state.leanthink
    body = {"model": "stall", "messages": Q, "max_completion_tokens": 32, "stream": stream,
            "leanthink": {"method": "direct"}}

    async def fn(c):
        t0 = time.monotonic()
        first = await c.post("/v1/chat/completions", json=body)
        took = time.monotonic() - t0
        running_after = state.slots.running
        second = await c.post("/v1/chat/completions", json=body)  # at once: the slot must be free
        return first, took, running_after, second

    first, took, running_after, second = run(app, fn)
    assert first.status_code == 504, first.text  # no token came: the error still gets a proper status
    assert took < 1.0 + 1.5
    assert running_after == 0
    assert second.status_code == 504, second.text  # not 429: the slot was free
    deadline = time.monotonic() + 3
    while len(stalling.closed) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stalling.posts == 2 and len(stalling.closed) == 2  # both upstream connections were closed


def test_abortable_reads_are_installed_on_the_http_backend(stalling):
    """The mechanism of the fix: the backend's pool reads in slices that poll the cancel
    flag. If an httpx upgrade hides the pool elsewhere, this fails instead of the fix
    silently turning off."""
    from leanthink.api import get_backend
    from leanthink.backends.abortable import _AbortableBackend, abort_when

    backend = get_backend(upstream_model(stalling), quiet=True)
    assert isinstance(backend.http._transport._pool._network_backend, _AbortableBackend)

    class Stop(BaseException):
        pass

    flag = {"stop": False}

    def check():
        if flag["stop"]:
            raise Stop()

    threading.Timer(0.5, lambda: flag.update(stop=True)).start()
    t0 = time.monotonic()
    with pytest.raises(Stop), abort_when(check):
        backend.http.post(stalling.url + "/completions", json={"prompt": "x"})
    assert time.monotonic() - t0 < 1.5


# -- defect 5: pass-through streams obey the request timeout -------------------------------------------


def test_a_trickling_passthrough_stream_is_cut_at_the_request_timeout(trickling):
    from leanthink.api import get_backend

    model = upstream_model(trickling, template=False)
    app = make_app(get_backend(model, quiet=True), model=model, request_timeout=1.0)
    body = {"model": "stall", "messages": Q, "stream": True, "leanthink": {"method": "passthrough"}}

    async def fn(c):
        t0 = time.monotonic()
        r = await c.post("/v1/chat/completions", json=body)
        return r, time.monotonic() - t0

    resp, took = run(app, fn)
    assert resp.status_code == 200
    assert 0.9 < took < 1.0 + 1.5, took  # the upstream would have trickled for 20 s
    assert '"w0 "' in resp.text  # it was relayed until then
    events = [line[5:].strip() for line in resp.text.splitlines() if line.startswith("data:")]
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["error"]["code"] == "timeout"
    deadline = time.monotonic() + 3
    while not trickling.closed and time.monotonic() < deadline:
        time.sleep(0.05)
    assert trickling.closed, "the upstream stream was not closed"


# -- slow: a real `leanthink serve` process, raw sockets ---------------------------------------------


class Serve:
    def __init__(self, tmp: Path, *args: str, env: dict[str, str] | None = None):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = tmp / f"serve-{self.port}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "leanthink.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port),
             "--no-access-log", *args],
            stdout=subprocess.DEVNULL, stderr=open(self.log, "wb"), env={**os.environ, **(env or {})})
        try:
            wait_http(self.base + "/metrics", self.proc, timeout=60)
        except Exception:
            self.stop()
            raise RuntimeError(f"leanthink serve did not start:\n{self.log.read_text()[-3000:]}") from None

    def metric(self, name: str, **labels: str) -> float:
        from prometheus_client.parser import text_string_to_metric_families

        total = 0.0
        for fam in text_string_to_metric_families(httpx.get(self.base + "/metrics", timeout=10).text):
            for s in fam.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    total += s.value
        return total

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


TIMEOUTS = {"LEANTHINK_HEADER_TIMEOUT": "1.5", "LEANTHINK_BODY_TIMEOUT": "1.5", "LEANTHINK_KEEP_ALIVE_TIMEOUT": "1.5"}


@pytest.fixture(scope="module")
def stalled_serve(tmp_path_factory):
    """`leanthink serve` in front of a stalling upstream: one slot, no queue, 2 s timeout,
    1.5 s header/body/keep-alive timeouts."""
    up = Upstream("stall")
    s = Serve(tmp_path_factory.mktemp("robust"), "--model", upstream_model(up), "--max-concurrent", "1",
              "--max-queue", "0", "--request-timeout", "2", env=TIMEOUTS)
    s.upstream = up
    yield s
    s.stop()
    up.close()


def connect(s: Serve) -> socket.socket:
    return socket.create_connection(("127.0.0.1", s.port), timeout=5)


def read_until_closed(sock: socket.socket, limit: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and when it closed
    (seconds from now). Fails if the connection is still open after `limit` seconds."""
    t0, data = time.monotonic(), b""
    sock.settimeout(0.2)
    while time.monotonic() - t0 < limit:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return data, time.monotonic() - t0
        if not chunk:
            return data, time.monotonic() - t0
        data += chunk
    pytest.fail(f"the server kept the connection open for {limit}s (received {data[:200]!r})")


@pytest.mark.slow
def test_serve_504_frees_the_slot_for_the_next_request(stalled_serve):
    body = {"model": "stall", "messages": Q, "max_completion_tokens": 16, "leanthink": {"method": "direct"}}
    for _ in range(2):  # one slot, no queue: a slot still held by the first would make the second a 429
        t0 = time.monotonic()
        r = httpx.post(stalled_serve.base + "/v1/chat/completions", json=body, timeout=30)
        assert r.status_code == 504, r.text
        assert time.monotonic() - t0 < 2 + 1.5
    assert stalled_serve.metric("leanthink_requests_running") == 0
    assert stalled_serve.metric("leanthink_cancelled_total", reason="timeout") >= 2


@pytest.mark.slow
def test_serve_mid_upload_disconnect_is_a_client_disconnect(stalled_serve):
    before_500 = stalled_serve.metric("leanthink_errors_total", status="500")
    before = stalled_serve.metric("leanthink_client_disconnects_total", stage="upload")
    with connect(stalled_serve) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 5000\r\n\r\n{\"model\": \"stall\", \"mess")
        time.sleep(0.3)
    deadline = time.monotonic() + 5
    while stalled_serve.metric("leanthink_client_disconnects_total", stage="upload") == before:
        assert time.monotonic() < deadline, "the disconnect was not counted"
        time.sleep(0.1)
    assert stalled_serve.metric("leanthink_errors_total", status="500") == before_500
    assert stalled_serve.metric("leanthink_requests_total", status="499") >= 1
    log = stalled_serve.log.read_text()
    assert "Traceback" not in log and "ERROR" not in log, log[-2000:]


@pytest.mark.slow
def test_serve_closes_a_connection_that_stalls_its_headers(stalled_serve):
    with connect(stalled_serve) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Le")
        data, took = read_until_closed(sock, 1.5 + 3)
    assert data.startswith(b"HTTP/1.1 408"), data
    assert took >= 1.0


@pytest.mark.slow
def test_serve_closes_a_slowloris_that_drips_its_headers(stalled_serve):
    """One byte every 0.3 s keeps no deadline from expiring but the head's total one."""
    head = b"GET /health HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"a" * 100
    t0 = time.monotonic()
    with connect(stalled_serve) as sock:
        for b in head:
            try:
                sock.sendall(bytes([b]))
            except OSError:
                break
            if select.select([sock], [], [], 0.3)[0]:
                break
        data, _ = read_until_closed(sock, 3)
    assert time.monotonic() - t0 < 1.5 + 3
    assert data.startswith(b"HTTP/1.1 408"), data


@pytest.mark.slow
def test_serve_closes_an_idle_connection_that_never_sends(stalled_serve):
    with connect(stalled_serve) as sock:
        data, took = read_until_closed(sock, 1.5 + 3)
    assert data == b"" and took >= 1.0


@pytest.mark.slow
def test_serve_answers_408_to_a_stalled_body_and_closes(stalled_serve):
    with connect(stalled_serve) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"model\"")
        data, took = read_until_closed(sock, 1.5 + 3)
    assert data.startswith(b"HTTP/1.1 408"), data
    assert b"body_timeout" in data and took >= 1.0


@pytest.mark.slow
def test_serve_closes_an_idle_keep_alive_connection(stalled_serve):
    with connect(stalled_serve) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
        t0 = time.monotonic()
        data, took = read_until_closed(sock, 1.5 + 3)
    assert data.startswith(b"HTTP/1.1 200")
    assert time.monotonic() - t0 >= 1.0  # kept alive a while, then closed


@pytest.mark.slow
def test_serve_exits_on_sigterm_despite_a_stalled_upstream(tmp_path):
    up = Upstream("stall")
    s = Serve(tmp_path, "--model", upstream_model(up), "--request-timeout", "120", "--shutdown-timeout", "2")
    try:
        results: list = []

        def call():
            try:
                results.append(httpx.post(s.base + "/v1/chat/completions", timeout=60,
                                          json={"model": "stall", "messages": Q, "leanthink": {"method": "direct"}}))
            except httpx.HTTPError as exc:
                results.append(exc)

        t = threading.Thread(target=call, daemon=True)
        t.start()
        assert up.got_post.wait(15), "the request never reached the upstream"
        t0 = time.monotonic()
        s.proc.send_signal(signal.SIGTERM)
        try:
            s.proc.wait(2 + 4)
        except subprocess.TimeoutExpired:
            pytest.fail(f"SIGTERM: still running after {time.monotonic() - t0:.1f}s with --shutdown-timeout 2")
        t.join(5)
        assert results, "the in-flight request got no answer"
        assert not isinstance(results[0], httpx.Response) or results[0].status_code == 503, results[0]
    finally:
        s.stop()
        up.close()
