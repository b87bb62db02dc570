"""A hostile client may only pick among what the operator loaded (issue 12, defects 1, 2, 6).

Method parameters that name another model (`small_model`) or a probe (`probe`) used to be
loaded per request: a client could make the server read a local file and POST it to a host
of its choice, probe which paths exist, and load a new model per request. Now they are
names the operator registers at start (`--extra-model NAME=MODEL`, `--probe NAME=PATH`);
anything else is a 400 that neither echoes the value nor touches a file or the network.

The fast tests drive the real app in process (`httpx.ASGITransport`, lifespan included)
over a scripted backend; the slow ones start `leanthink serve` with the tiny model.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import threading
from pathlib import Path

import httpx
import pytest

from leanthink import api
from leanthink.backends.base import Capabilities
from leanthink.errors import ConfigError
from leanthink.server.app import create_app
from leanthink.server.config import ServerConfig

from .fakes import ScriptedBackend

MAIN = "scripted-qwen2.5"
Q = [{"role": "user", "content": "What is 2+3?"}]


class Listener:
    """A TCP listener on 127.0.0.1 that counts the connections it receives."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            self.accepted += 1
            conn.close()

    def close(self):
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def listener():
    lis = Listener()
    yield lis
    lis.close()


_OPENED: list[str] | None = None


def _audit(event, args):
    if _OPENED is not None and event == "open" and isinstance(args[0], (str, bytes, Path)):
        _OPENED.append(str(args[0]))


sys.addaudithook(_audit)  # records file opens while a test watches (cannot be removed; idle otherwise)


def probe_json(path: Path, dim: int = 4, bias: float = 40.0) -> Path:
    """A valid probe file (zero weights: P(correct) = sigmoid(bias) everywhere)."""
    path.write_text(json.dumps({"format": "leanthink-probe/1", "model_id": MAIN, "weights": [0.0] * dim,
                                "mean": [0.0] * dim, "std": [1.0] * dim, "bias": bias, "step_delimiter": "\n"}))
    return path


def ssrf(port: int) -> str:
    return f"openai:http://127.0.0.1:{port}/v1#x?template=/proc/self/cmdline"


def post_all(app, bodies: list[dict], path: str = "/v1/chat/completions") -> list[httpx.Response]:
    """Start the app (lifespan: extra models and probes load), send the bodies, stop it."""

    async def go():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30) as c:
                return [await c.post(path, json=b) for b in bodies]

    return asyncio.run(go())


def body(**leanthink) -> dict:
    return {"model": MAIN, "messages": Q, "max_completion_tokens": 16, "leanthink": leanthink}


def scripted(**kw) -> ScriptedBackend:
    return ScriptedBackend(lambda p: "4 and 1 make 5.\n\\boxed{5}", model_id=MAIN, **kw)


def app_for(backend=None, **config):
    return create_app(ServerConfig(model=MAIN, **config), backend=backend or scripted())


def assert_refused(resp: httpx.Response, *secrets: str) -> dict:
    assert resp.status_code == 400, resp.text
    err = resp.json()["error"]
    for s in secrets:
        assert s not in resp.text
    return err


# -- defect 1: client-chosen model strings ---------------------------------------------------


def test_a_client_model_string_is_refused_and_nothing_is_contacted(listener, tmp_path):
    global _OPENED
    bodies = [
        body(method="route", small_model=ssrf(listener.port)),
        body(method="spec-reason", small_model=ssrf(listener.port)),
        body(method="route", params={"small_model": ssrf(listener.port)}),
        {"model": f"route(small_model=evil-{listener.port}.gguf)/{MAIN}", "messages": Q},  # no '/' in a prefix
        body(method=f"chain-of-draft+route(small_model=openai:http://127.0.0.1:{listener.port}/v1#x)"),
    ]
    _OPENED = []
    try:
        resps = post_all(app_for(), bodies)
        opened = [p for p in _OPENED if "cmdline" in p]
    finally:
        _OPENED = None
    for r in resps:
        err = assert_refused(r, str(listener.port), "/proc", "127.0.0.1")
        assert err["code"] == "unknown_extra_model" and err["param"] == "leanthink.small_model"
        assert "--extra-model" in err["message"]
    assert opened == [] and listener.accepted == 0


def test_an_existing_and_a_missing_gguf_get_the_same_answer(tmp_path):
    real = tmp_path / "model.gguf"
    real.write_bytes(b"GGUF" + b"\0" * 64)
    resps = post_all(app_for(), [body(method="route", small_model=str(real)),
                                 body(method="route", small_model=str(tmp_path / "missing.gguf")),
                                 body(method="route", small_model="qwen2.5-coder-0.5b?n_ctx=131072")])
    assert len({r.text for r in resps}) == 1  # byte-identical: no existence oracle
    assert_refused(resps[0], str(tmp_path), "gguf")


def test_probe_exit_with_a_path_is_refused_without_reading_it(tmp_path):
    global _OPENED
    path = probe_json(tmp_path / "probe.json")
    _OPENED = []
    try:
        resps = post_all(app_for(), [body(method="probe-exit", probe=str(path)),
                                     body(method="probe-exit", probe=str(tmp_path / "missing.json")),
                                     body(method=f"probe-exit(probe={path})")])
        opened = [p for p in _OPENED if p.startswith(str(tmp_path))]
    finally:
        _OPENED = None
    assert opened == []
    assert len({r.text for r in resps}) == 1
    err = assert_refused(resps[0], str(tmp_path))
    assert err["code"] == "unknown_probe" and "--probe NAME=PATH" in err["message"]


def test_the_default_small_model_needs_the_operator(tmp_path):
    resps = post_all(app_for(), [body(method="route"), body(method="spec-reason"),
                                 body(method="route", small_model="none"), body(method="route(small_model=none)")])
    for r in resps[:2]:
        err = assert_refused(r)
        assert "no extra model 'small'" in err["message"] and "--extra-model small=MODEL" in err["message"]
    for r in resps[2:]:  # route on the served model alone needs nothing extra
        assert r.status_code == 200, r.text
        ev = next(e for e in r.json()["leanthink"]["trace"] if e["event"] == "route")
        assert ev["detail"]["fast_model"] == MAIN


def test_registered_extra_model_is_loaded_once_at_start_and_capped_per_request(monkeypatch):
    loads = []
    small = ScriptedBackend(lambda p: "5} " + "pad " * 200, model_id="fake-small")

    def fake_load(model, quiet=False):
        loads.append(model)
        return small

    from leanthink.server import extras

    monkeypatch.setattr(extras, "load_backend", fake_load)
    app = app_for(extra_models={"small": "fake-small-model", "alt": "fake-small-model"})
    resps = post_all(app, [body(method="route"), body(method="route", small_model="small"),
                           body(method="route", small_model="alt", signal="agreement", n_fast=2),
                           body(method="route", small_model="fake-small-model")])
    assert loads == ["fake-small-model"]  # once, at start, shared by both names
    for r in resps[:3]:
        assert r.status_code == 200, r.text
        ev = next(e for e in r.json()["leanthink"]["trace"] if e["event"] == "route")
        assert ev["detail"]["fast_model"] == "fake-small"
        assert r.json()["usage"]["completion_tokens"] <= 16  # the extra model's tokens count in the cap
    assert_refused(resps[3], "fake-small-model")  # the model string itself is not a name


def test_registered_probe_is_read_at_start(tmp_path):
    path = probe_json(tmp_path / "sure.json", dim=4, bias=40.0)

    class Hidden(ScriptedBackend):
        hidden_size = 4

        def hidden_states_for(self, text):
            return [[0.0] * 4]

    be = Hidden(lambda p: "a\nb\nc\n\\boxed{5}", model_id=MAIN, caps=Capabilities(hidden_states=True))
    app = create_app(ServerConfig(model=MAIN, probes={"sure": str(path)}), backend=be)
    r = post_all(app, [body(method="probe-exit", probe="sure", max_thinking=12)])[0]
    assert r.status_code == 200, r.text
    ev = next(e for e in r.json()["leanthink"]["trace"] if e["event"] == "probe_checks")
    assert ev["detail"]["exited"] and ev["detail"]["n"] == 1


def test_operator_configuration_is_checked_at_start(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="--extra-model small=MODEL"):
        ServerConfig(model=MAIN, default_method="route")
    assert ServerConfig(model=MAIN, default_method="route", extra_models=["small=smollm2-135m"]).extra_models == {
        "small": "smollm2-135m"}
    with pytest.raises(ConfigError, match="--probe"):
        ServerConfig(model=MAIN, reasoning_effort=["high=probe-exit(probe=x)"])
    for bad in (["small"], ["=x"], ["a b=x"], ["s=a", "s=b"]):
        with pytest.raises(ValueError):
            ServerConfig(model=MAIN, extra_models=bad)
    monkeypatch.setenv("LEANTHINK_EXTRA_MODELS", "small=smollm2-135m,big=qwen2.5-coder-0.5b")
    monkeypatch.setenv("LEANTHINK_PROBES", '{"p1": "/x/p.json"}')
    c = ServerConfig(model=MAIN)
    assert c.extra_models == {"small": "smollm2-135m", "big": "qwen2.5-coder-0.5b"} and c.probes == {"p1": "/x/p.json"}


def test_a_missing_probe_stops_the_server_at_start(tmp_path):
    app = app_for(probes={"p": str(tmp_path / "missing.json")})
    with pytest.raises(ConfigError, match="probe 'p'"):
        post_all(app, [])


def test_the_server_does_not_swap_library_functions():
    before = api.get_backend
    post_all(app_for(), [body(method="think")])
    assert api.get_backend is before


# -- a real server process --------------------------------------------------------------------


@pytest.fixture(scope="module")
def serve(tmp_path_factory):
    from .test_server import Server

    s = Server("--model", "smollm2-135m", "--extra-model", "small=smollm2-135m", "--max-tokens-limit", "64",
               tmp=tmp_path_factory.mktemp("serve-security"))
    yield s
    s.stop()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_real_server_refuses_client_models_and_serves_registered_ones(serve, listener):
    url = serve.base + "/v1/chat/completions"
    model = "smollm2-135m"
    bad = {"model": model, "messages": Q, "max_completion_tokens": 8,
           "leanthink": {"method": "route", "small_model": ssrf(listener.port)}}
    r = httpx.post(url, json=bad, timeout=60)
    assert_refused(r, str(listener.port), "/proc")
    ok = serve.client().chat.completions.create(
        model=model, messages=Q, max_completion_tokens=16,
        extra_body={"leanthink": {"method": "route", "small_model": "small", "max_thinking": 8}})
    ev = next(e for e in ok.leanthink["trace"] if e["event"] == "route")
    assert ev["detail"]["fast_model"] == model and ok.usage.completion_tokens <= 16
    assert listener.accepted == 0


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_memory_stays_flat_over_50_hostile_requests(serve, tmp_path, capsys):
    """50 requests that each try another small_model or probe: the old server loaded a new
    model for each; this one refuses them all and its RSS stays within ±50 MB."""
    url = serve.base + "/v1/chat/completions"
    model = "smollm2-135m"
    real = tmp_path / "real.gguf"
    real.write_bytes(b"GGUF")
    values = []
    for i in range(50):
        kind = i % 5
        if kind == 0:
            values.append({"method": "route", "small_model": f"smollm2-135m?n_ctx={512 + i}"})
        elif kind == 1:
            values.append({"method": "spec-reason", "small_model": f"qwen2.5-coder-0.5b?n_ctx={1024 + i}"})
        elif kind == 2:
            values.append({"method": "route", "small_model": f"{tmp_path}/m{i}.gguf" if i % 2 else str(real)})
        elif kind == 3:
            values.append({"method": "probe-exit", "probe": f"{tmp_path}/p{i}.json"})
        else:
            values.append({"method": "route", "small_model": f"openai:http://127.0.0.1:9/v1#m{i}"})
    # warm up with valid requests so the baseline includes a generation
    for _ in range(2):
        assert httpx.post(url, json={"model": model, "messages": Q, "max_completion_tokens": 8,
                                     "leanthink": {"method": "route", "small_model": "small"}}, timeout=60).status_code == 200
    before = rss_mb(serve.proc.pid)
    statuses = []
    for i, lt in enumerate(values):
        statuses.append(httpx.post(url, json={"model": model, "messages": Q, "max_completion_tokens": 8,
                                              "leanthink": lt}, timeout=60).status_code)
        if i % 10 == 9:  # valid requests in between still work
            ok = httpx.post(url, json={"model": model, "messages": Q, "max_completion_tokens": 8,
                                       "leanthink": {"method": "route", "small_model": "small"}}, timeout=60)
            assert ok.status_code == 200, ok.text
    after = rss_mb(serve.proc.pid)
    with capsys.disabled():
        print(f"\nserver RSS before {before:.1f} MB, after 50 hostile requests {after:.1f} MB "
              f"(delta {after - before:+.1f} MB)")
    assert statuses == [400] * 50
    assert abs(after - before) <= 50, (before, after)


def test_serve_refuses_bad_operator_options_before_loading_anything(tmp_path):
    import typer
    from typer.testing import CliRunner

    from leanthink.server.cli import serve

    app = typer.Typer()
    app.command("serve")(serve)
    app.command("noop")(lambda: None)  # two commands: `serve` stays a subcommand
    bad_probe = tmp_path / "bad.json"
    bad_probe.write_text('{"format": "other"}')
    for args, msg in ((["--extra-model", "small"], "NAME=VALUE"),
                      (["--extra-model", f"small={tmp_path}/none.gguf"], "--extra-model small"),
                      (["--probe", f"p={tmp_path}/none.json"], "--probe p"),
                      (["--probe", f"p={bad_probe}"], "not a leanthink probe file"),
                      (["--default-method", "route"], "--extra-model small=MODEL")):
        res = CliRunner().invoke(app, ["serve", "--model", "smollm2-135m", *args])
        assert res.exit_code == 2 and msg in res.output, (args, res.output)
