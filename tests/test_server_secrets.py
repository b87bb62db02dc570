"""Secrets never leave the process: an upstream API key given in a model string (or taken from
the environment) appears in no response, log line, bench store or report (issue 12, defect 3),
and the open `/health` shows a model name, never a path (defect 11).

Unit tests of `redact` and friends run in the fast suite; the end-to-end checks start
llama-cpp-python's server with an API key as the upstream and grep everything produced.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from leanthink.errors import ConfigError
from leanthink.models import public_model_name, redact, redact_model_string, redact_obj, register_secret

from .conftest import free_port, smollm_path, wait_http

KEY = "sk-SECRET123"
MODEL = "smollm2-135m"
Q = [{"role": "user", "content": "What is 2+3?"}]


# -- the redaction function (fast) ---------------------------------------------------------


@pytest.mark.parametrize("raw, expected", [
    ("openai:http://h:8/v1#m?template=chatml&api_key=sk-SECRET123",
     "openai:http://h:8/v1#m?template=chatml&api_key=***"),
    ("openai:http://h:8/v1#m?api_key=sk-SECRET123&max_retries=1", "openai:http://h:8/v1#m?api_key=***&max_retries=1"),
    ("openai:http://user:pw-SECRET123@h:8/v1#m", "openai:http://***@h:8/v1#m"),
    ("openai:https://tok-SECRET123@h/v1#m?API-KEY=sk-SECRET123", "openai:https://***@h/v1#m?API-KEY=***"),
    ("leanthink bench --model 'openai:http://h/v1#m?api_key=sk-SECRET123' --out x",
     "leanthink bench --model 'openai:http://h/v1#m?api_key=***' --out x"),
    ("header Authorization: Bearer sk-SECRET123 sent", "header Authorization: Bearer *** sent"),
    ("{'api_key': 'sk-SECRET123', \"password\": \"SECRET123\"}", "{'api_key': '***', \"password\": \"***\"}"),
])
def test_redact_masks_keys_userinfo_and_tokens(raw, expected):
    assert redact_model_string(raw) == expected
    assert "SECRET123" not in redact(raw)
    assert redact(redact(raw)) == redact(raw)  # idempotent: safe to apply at every layer


@pytest.mark.parametrize("text", [
    "smollm2-135m?n_ctx=4096&threads=2",
    "openai:http://127.0.0.1:8000/v1#qwen?template=chatml&api_key_env=UPSTREAM_KEY",
    "basic arithmetic: token=3, key=5, e-mail a@b.c",
    "/models/qwen.gguf",
])
def test_redact_leaves_ordinary_text_alone(text):
    assert redact(text) == text


def test_registered_secret_is_masked_anywhere():
    secret = "zz-registered-9f8e7d"
    assert redact(f"upstream said: key {secret} is invalid") == f"upstream said: key {secret} is invalid"
    register_secret(secret)
    assert redact(f"upstream said: key {secret} is invalid") == "upstream said: key *** is invalid"
    register_secret("abc")  # too short to mask by value: ordinary words would be hit
    assert redact("abc abcd") == "abc abcd"


def test_redact_obj_and_non_strings():
    obj = {"model": "openai:http://h/v1#m?api_key=sk-SECRET123", "n": 3, "xs": ["http://u:SECRET123@h", None, 1.5]}
    out = redact_obj(obj)
    assert "SECRET123" not in json.dumps(out)
    assert out["n"] == 3 and out["xs"][1:] == [None, 1.5]
    assert redact(None) is None and redact(5) == 5


@pytest.mark.parametrize("model, name", [
    ("openai:http://u:SECRET123@h/v1#Qwen/Qwen3-8B?api_key=sk-SECRET123", "Qwen/Qwen3-8B"),
    ("openai:http://h/v1", "openai"),
    ("/home/someone/models/qwen-7b.gguf?n_ctx=4096", "qwen-7b.gguf"),
    ("gguf:./models/x.gguf", "x.gguf"),
    ("smollm2-135m", "smollm2-135m"),
    ("Qwen/Qwen3-8B", "Qwen/Qwen3-8B"),
])
def test_public_model_name_has_no_paths_or_secrets(model, name):
    assert public_model_name(model) == name


def test_public_model_name_of_an_existing_directory(tmp_path):
    d = tmp_path / "secret-dir" / "my-model"
    d.mkdir(parents=True)
    assert public_model_name(str(d)) == "my-model"


def test_parse_errors_do_not_echo_the_key():
    from leanthink.models import parse_model_string

    with pytest.raises(ConfigError) as exc:
        parse_model_string("openai:ftp://h/v1#m?api_key=sk-SECRET123")
    assert "SECRET123" not in str(exc.value)
    spec = parse_model_string("openai:http://h/v1#m?api_key=sk-SECRET123")
    assert "SECRET123" not in repr(spec) and "SECRET123" not in spec.display


def test_api_error_body_is_redacted():
    from leanthink.server.protocol import ApiError

    body = ApiError(404, "model 'x' is not served; served: openai:http://h/v1#m?api_key=sk-SECRET123").body()
    assert "SECRET123" not in json.dumps(body) and "api_key=***" in body["error"]["message"]


def test_upstream_key_from_the_environment(monkeypatch):
    from leanthink.backends.openai_http import UPSTREAM_KEY_ENV, resolve_api_key

    monkeypatch.delenv(UPSTREAM_KEY_ENV, raising=False)
    monkeypatch.delenv("MY_UPSTREAM_KEY", raising=False)
    assert resolve_api_key() is None
    assert resolve_api_key("inline-key-123") == "inline-key-123"
    with pytest.raises(ConfigError, match="MY_UPSTREAM_KEY is not set"):
        resolve_api_key(api_key_env="MY_UPSTREAM_KEY")
    monkeypatch.setenv("MY_UPSTREAM_KEY", "env-key-SECRET-777")
    assert resolve_api_key(api_key_env="MY_UPSTREAM_KEY") == "env-key-SECRET-777"
    assert redact("echo env-key-SECRET-777") == "echo ***"  # registered once read
    with pytest.raises(ConfigError, match="not both"):
        resolve_api_key("a", "MY_UPSTREAM_KEY")
    monkeypatch.setenv(UPSTREAM_KEY_ENV, "fallback-key-SECRET-888")
    assert resolve_api_key() == "fallback-key-SECRET-888"
    assert resolve_api_key("inline-key-123") == "inline-key-123"  # an explicit key wins


def test_api_key_env_is_a_model_option(monkeypatch):
    """The option reaches the backend (it fails on the missing variable, before any network call)."""
    from leanthink.backends import load_backend

    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(ConfigError, match="NO_SUCH_KEY_VAR"):
        load_backend("openai:http://127.0.0.1:9/v1#m?api_key_env=NO_SUCH_KEY_VAR&max_retries=0")


def test_store_meta_and_identity_are_redacted(tmp_path):
    from leanthink.eval.store import Store

    raw = f"openai:http://h/v1#m?api_key={KEY}"
    s = Store(tmp_path)
    s.set_meta("config", {"model": raw, "command": f"leanthink bench --model '{raw}'"})
    s.check_identity({"model": raw, "dataset": "d"})
    s.check_identity({"model": raw.replace(KEY, "sk-ROTATED999"), "dataset": "d"})  # a rotated key resumes
    s.close()
    assert KEY.encode() not in b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())


def test_report_of_a_store_written_before_redaction(tmp_path):
    """An old store may hold the raw key in its meta: no report output shows it."""
    from leanthink.eval.report import build_report

    from .test_report import fill, rec

    fill(tmp_path, [rec("think", "a", correct=True, thinking=10),
                    rec("direct", "a", correct=False, thinking=0, error=f"cannot reach http://u:{KEY}@h/v1")])
    raw = f"openai:http://h/v1#m?api_key={KEY}"
    db = sqlite3.connect(tmp_path / "results.sqlite")
    db.execute("INSERT OR REPLACE INTO meta VALUES ('commands', ?)", (json.dumps([f"leanthink bench --model '{raw}'"]),))
    db.execute("INSERT OR REPLACE INTO meta VALUES ('config', ?)", (json.dumps({"model": raw, "dataset": "d"}),))
    db.commit()
    db.close()
    paths = build_report(tmp_path)
    for key in ("summary", "markdown", "html"):
        assert KEY not in paths[key].read_text(), key
    assert "api_key=***" in paths["markdown"].read_text()


# -- end to end: a keyed upstream behind `leanthink serve`, and a bench run (slow) ----------


class Proc:
    """A `leanthink` command line as a subprocess with its stderr in a file."""

    def __init__(self, args: list[str], tmp: Path, env: dict[str, str] | None = None, serve: bool = True):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = tmp / f"leanthink-{self.port}.log"
        extra = ["--host", "127.0.0.1", "--port", str(self.port)] if serve else []
        self.proc = subprocess.Popen([sys.executable, "-m", "leanthink.cli", *args, *extra],
                                     stdout=open(tmp / f"out-{self.port}.txt", "wb"), stderr=open(self.log, "wb"),
                                     env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE", **(env or {})})
        if serve:
            try:
                wait_http(self.base + "/health", self.proc, timeout=120)
            except Exception:
                self.stop()
                raise RuntimeError(f"leanthink serve did not start:\n{self.log.read_text()[-3000:]}") from None

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def keyed_upstream():
    """llama-cpp-python's server that accepts only KEY."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", smollm_path(), "--host", "127.0.0.1",
         "--port", str(port), "--n_ctx", "2048", "--model_alias", MODEL, "--api_key", KEY],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"},
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/v1/models", proc, timeout=120)
        r = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=10)
        assert r.status_code == 401, "the upstream must refuse requests without the key"
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _exercise(base: str) -> list[str]:
    """Everything a client can see: 404s, model list, health, answers, a stream, errors."""
    url = base + "/v1/chat/completions"
    seen = []
    for model in ("nope", "think/nope", "passthrough/nope"):
        r = httpx.post(url, json={"model": model, "messages": Q, "max_tokens": 8}, timeout=60)
        assert r.status_code == 404, r.text
        seen.append(r.text)
    r = httpx.get(base + "/v1/models", timeout=10)
    assert r.status_code == 200 and MODEL in r.text
    seen.append(r.text)
    r = httpx.get(base + "/health", timeout=10)
    assert r.status_code == 200 and r.json()["model"] == MODEL, r.text
    seen.append(r.text)
    for model in (MODEL, f"passthrough/{MODEL}"):
        r = httpx.post(url, json={"model": model, "messages": Q, "max_tokens": 16}, timeout=120)
        assert r.status_code == 200, r.text  # the upstream accepted the key we sent
        seen.append(r.text)
    with httpx.stream("POST", url, json={"model": f"passthrough/{MODEL}", "messages": Q, "max_tokens": 8,
                                         "stream": True}, timeout=120) as r:
        assert r.status_code == 200
        seen.append(r.read().decode())
    r = httpx.post(url, json={"model": MODEL, "messages": Q, "leanthink": {"method": "no-such-method"}}, timeout=30)
    assert r.status_code == 400
    seen.append(r.text)
    return seen


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_serving_never_shows_the_upstream_key(keyed_upstream, tmp_path):
    proxy = Proc(["serve", "--model", f"openai:{keyed_upstream}#{MODEL}?template=chatml&max_retries=1&api_key={KEY}"],
                 tmp_path)
    try:
        seen = _exercise(proxy.base)
    finally:
        log = proxy.stop()
    assert "leanthink serve:" in log  # the startup line was captured
    for text in seen + [log]:
        assert KEY not in text


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("how", ["api_key_env", "LEANTHINK_UPSTREAM_API_KEY"])
def test_upstream_key_from_the_environment_end_to_end(keyed_upstream, tmp_path, how):
    model = f"openai:{keyed_upstream}#{MODEL}?template=chatml&max_retries=1"
    if how == "api_key_env":
        model += "&api_key_env=MY_UPSTREAM_KEY"
        env = {"MY_UPSTREAM_KEY": KEY}
    else:
        env = {"LEANTHINK_UPSTREAM_API_KEY": KEY}
    proxy = Proc(["serve", "--model", model], tmp_path, env=env)
    try:
        seen = _exercise(proxy.base)  # chat answers 200: the key from the environment was sent
    finally:
        log = proxy.stop()
    for text in seen + [log]:
        assert KEY not in text


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bench_store_and_report_never_hold_the_key(keyed_upstream, tmp_path):
    out = tmp_path / "bench"
    model = f"openai:{keyed_upstream}#{MODEL}?template=chatml&max_retries=1&api_key={KEY}"
    run = Proc(["bench", "--model", model, "--limit", "1", "--methods", "direct", "--no-oracle", "--out", str(out)],
               tmp_path, serve=False)
    assert run.proc.wait(240) == 0, run.log.read_text()[-3000:]
    log = run.stop()
    files = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert {"results.sqlite", "summary.json", "report.md", "report.html"} <= set(files)
    for name, data in files.items():
        assert KEY.encode() not in data, name
    assert KEY not in log
    summary = json.loads(files["summary.json"])
    assert "api_key=***" in summary["config"]["model"] and "api_key=***" in summary["commands"][-1]
    db = sqlite3.connect(out / "results.sqlite")  # and the store still resumes with the same key
    assert db.execute("SELECT COUNT(*) FROM records").fetchone()[0] == 1
    db.close()


def test_health_shows_no_model_path(tmp_path):
    """In process: the backend's model id is a full .gguf path (as llama.cpp reports it);
    /health, open to anyone, shows its file name only."""
    import asyncio

    from leanthink.server.app import create_app
    from leanthink.server.config import ServerConfig

    from .fakes import ScriptedBackend

    path = tmp_path / "private" / "models" / "tiny.gguf"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"GGUF")
    app = create_app(ServerConfig(model=str(path)), backend=ScriptedBackend(lambda p: "5", model_id=str(path)))

    async def go():
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
                return await c.get("/health")

    r = asyncio.run(go())
    assert r.status_code == 200 and r.json()["status"] == "ok"
    assert r.json()["model"] == "tiny.gguf"
    assert str(path.parent) not in r.text and "private" not in r.text

