"""`leanthink serve` as a real process on 127.0.0.1, driven by the official `openai` client.

Smoke tests of what needs a real socket or a real engine: answers and streams from SmolLM2
(which cannot do math), a method's mechanism firing on it, the token cap on real engines,
cancellation when the client goes away, an upstream that dies. The protocol itself (errors,
method selection, auth, 429, SSE format) is tested in process in test_server_inprocess.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .conftest import free_port, smollm_path, wait_http

pytestmark = pytest.mark.timeout(180)

MODEL = "smollm2-135m"
Q = [{"role": "user", "content": "What is 2+3?"}]
LONG_Q = [{"role": "user", "content": "Count from 1 to 1000, separated by commas."}]
KEY = "sekrit-key"
# Idle OpenMP threads of llama.cpp sleep instead of spinning: on a shared CI CPU this keeps
# a 135M model at ~100 tok/s instead of multi-second stalls (`leanthink serve` sets it too).
ENV = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}


class Server:
    def __init__(self, *args: str, tmp: Path):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = tmp / f"serve-{self.port}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "leanthink.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port),
             "--no-access-log", *args],
            stdout=subprocess.DEVNULL, stderr=open(self.log, "wb"), env=ENV,
        )
        try:
            wait_http(self.base + "/health", self.proc, timeout=120)
        except Exception:
            self.stop()
            raise RuntimeError(f"leanthink serve did not start:\n{self.log.read_text()[-3000:]}") from None

    def client(self, key: str | None = "unused", **kw) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base + "/v1", api_key=key, max_retries=0, timeout=120, **kw)

    def metrics(self) -> dict[str, float]:
        """Sum of each sample name over its labels, plus `name{label=value}` entries."""
        out: dict[str, float] = {}
        text = httpx.get(self.base + "/metrics", timeout=10).text
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                out[s.name] = out.get(s.name, 0.0) + s.value
                for k, v in s.labels.items():
                    key = f"{s.name}{{{k}={v}}}"
                    out[key] = out.get(key, 0.0) + s.value
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server("--model", MODEL, "--max-concurrent", "2", "--max-n", "2", "--max-tokens-limit", "512",
               "--extra-model", f"small={MODEL}",  # spec-reason's default small model (shares the engine)
               tmp=tmp_path_factory.mktemp("serve"))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    """One generation slot, no queue, an API key."""
    s = Server("--model", MODEL, "--api-key", KEY, "--max-concurrent", "1", "--max-queue", "0",
               tmp=tmp_path_factory.mktemp("serve-limited"))
    yield s
    s.stop()


def _error(resp: httpx.Response, status: int) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    return body["error"]


# -- basics -------------------------------------------------------------------------------


def test_non_streaming_chat(server):
    r = server.client().chat.completions.create(model=MODEL, messages=Q, max_completion_tokens=40)
    assert r.object == "chat.completion" and r.model == MODEL and len(r.choices) == 1
    msg = r.choices[0].message
    assert msg.role == "assistant" and msg.content.strip()
    assert msg.reasoning_content.strip()  # SmolLM2 is an instruct model: emulated thinking
    u = r.usage
    assert 0 < u.completion_tokens <= 40
    assert 0 < u.completion_tokens_details.reasoning_tokens <= u.completion_tokens
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens and u.prompt_tokens > 10
    ext = r.leanthink
    assert ext["method"].startswith("think") and ext["method_source"] == "default"
    assert ext["emulated_thinking"] is True and ext["backend"] == "llama.cpp"
    assert ext["finish_reason"] in ("stop", "budget", "forced", "length")
    assert isinstance(ext["trace"], list)
    assert u.leanthink["thinking_tokens"] == u.completion_tokens_details.reasoning_tokens
    assert r.choices[0].finish_reason in ("stop", "length")


def test_streaming_reasoning_then_content_with_usage(server):
    stream = server.client().chat.completions.create(
        model=MODEL, messages=Q, max_completion_tokens=40, stream=True, stream_options={"include_usage": True})
    kinds, reasoning, content, finish, usage, ext = [], "", "", None, None, None
    for chunk in stream:
        if not chunk.choices:
            usage, ext = chunk.usage, chunk.leanthink
            continue
        c = chunk.choices[0]
        rc = getattr(c.delta, "reasoning_content", None)
        if rc:
            kinds.append("r")
            reasoning += rc
        if c.delta.content:
            kinds.append("c")
            content += c.delta.content
        if c.finish_reason:
            finish = c.finish_reason
    # Reasoning arrives as it is produced: sentence by sentence for emulated thinking in the
    # natural answer format (the sentence that may open the answer is held back).
    assert kinds.count("r") >= 2, kinds
    assert "c" in kinds and kinds.index("c") > max(i for i, k in enumerate(kinds) if k == "r")
    assert reasoning.strip() and content.strip()
    assert finish in ("stop", "length")
    assert usage is not None and 0 < usage.completion_tokens <= 40
    assert 0 < usage.completion_tokens_details.reasoning_tokens <= usage.completion_tokens
    assert ext["method"].startswith("think") and isinstance(ext["trace"], list)


# -- method selection ------------------------------------------------------------------------


def test_method_via_model_prefix(server):
    c = server.client()
    r = c.chat.completions.create(model=f"deer/{MODEL}", messages=Q, max_completion_tokens=40)
    assert r.leanthink["method"].startswith("deer") and r.leanthink["method_source"] == "model"
    assert any(ev["event"] == "probes" for ev in r.leanthink["trace"])
    assert r.model == f"deer/{MODEL}"
    r = c.chat.completions.create(model=f"chain-of-draft+deer/{MODEL}", messages=Q, max_completion_tokens=40)
    assert r.leanthink["method"].startswith("chain-of-draft+deer")


@pytest.mark.parametrize("method", ["think", "deer", "sc(k=2)", "spec-reason", "passthrough"])
def test_max_completion_tokens_is_a_hard_cap(server, method):
    cap = 24
    r = server.client().chat.completions.create(model=MODEL, messages=LONG_Q, max_completion_tokens=cap,
                                                extra_body={"leanthink": {"method": method}})
    assert 0 < r.usage.completion_tokens <= cap
    assert r.leanthink["token_cap"] == cap
    # legacy max_tokens is honoured the same way, streaming too
    stream = server.client().chat.completions.create(
        model=MODEL, messages=LONG_Q, max_tokens=cap, stream=True, stream_options={"include_usage": True},
        extra_body={"leanthink": {"method": method}})
    usage = [ch.usage for ch in stream if ch.usage][-1]
    assert 0 < usage.completion_tokens <= cap


# -- cancellation ------------------------------------------------------------------


def _wait_idle(server: Server, timeout: float = 20) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        h = httpx.get(server.base + "/health").json()
        if h["running"] == 0 and h["queued"] == 0:
            return
        time.sleep(0.1)
    raise AssertionError(f"server still busy: {h}")


def test_disconnect_cancels_generation(limited):
    """Close the stream after a few chunks: the worker must stop generating, not run to the cap."""
    _wait_idle(limited)
    before = limited.metrics()
    gen0 = before.get("leanthink_generated_tokens_total", 0.0)
    cancel0 = before.get("leanthink_cancelled_total{reason=disconnect}", 0.0)
    stream = limited.client(key=KEY).chat.completions.create(
        model=MODEL, messages=LONG_Q, max_completion_tokens=2000, stream=True)
    seen = 0
    for chunk in stream:
        if chunk.choices and getattr(chunk.choices[0].delta, "reasoning_content", None):
            seen += 1
            if seen >= 5:
                break
    stream.close()
    deadline = time.time() + 20
    while time.time() < deadline:
        m = limited.metrics()
        if m.get("leanthink_cancelled_total{reason=disconnect}", 0.0) > cancel0:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the cancellation was not recorded")
    g1 = limited.metrics()["leanthink_generated_tokens_total"]
    time.sleep(1.5)
    g2 = limited.metrics()["leanthink_generated_tokens_total"]
    assert g2 == g1, "the engine kept generating after the client left"
    # Uncancelled, this prompt generates ~340 tokens; cancelled, a few beyond what was read.
    assert g1 - gen0 < 150, g1 - gen0
    _wait_idle(limited, 5)


# -- upstream (proxy in front of another OpenAI-compatible server) ---------------------------------


@pytest.mark.slow
def test_upstream_proxy_and_upstream_down(tmp_path):
    up_port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", smollm_path(), "--host", "127.0.0.1",
         "--port", str(up_port), "--n_ctx", "2048", "--model_alias", MODEL, "--interrupt_requests", "False"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV,
    )
    proxy = None
    try:
        wait_http(f"http://127.0.0.1:{up_port}/v1/models", upstream, timeout=120)
        proxy = Server("--model", f"openai:http://127.0.0.1:{up_port}/v1#{MODEL}?template=chatml&max_retries=1",
                       tmp=tmp_path)
        c = proxy.client()
        r = c.chat.completions.create(model=MODEL, messages=Q, max_completion_tokens=24)
        assert r.leanthink["backend"] == "openai" and r.leanthink["method"].startswith("think")
        assert 0 < r.usage.completion_tokens <= 24 and r.choices[0].message.content
        r = c.chat.completions.create(model=f"passthrough/{MODEL}", messages=Q, max_completion_tokens=16)
        assert r.leanthink["method"] == "passthrough" and 0 < r.usage.completion_tokens <= 16
        chunks = list(c.chat.completions.create(model=f"passthrough/{MODEL}", messages=Q, max_tokens=8, stream=True))
        assert any(ch.choices and ch.choices[0].delta.content for ch in chunks)

        upstream.kill()
        upstream.wait(10)
        url = proxy.base + "/v1/chat/completions"
        t0 = time.time()
        err = _error(httpx.post(url, json={"model": MODEL, "messages": Q, "max_tokens": 8}, timeout=30), 502)
        assert err["type"] == "upstream_error" and err["code"] == "upstream_unavailable"
        assert time.time() - t0 < 10  # bounded retries, not a hang
        _error(httpx.post(url, json={"model": f"passthrough/{MODEL}", "messages": Q, "max_tokens": 8}, timeout=30), 502)
        _error(httpx.post(url, json={"model": MODEL, "messages": Q, "max_tokens": 8, "stream": True}, timeout=30), 502)
        with pytest.raises(openai.InternalServerError) as exc:
            c.chat.completions.create(model=f"deer/{MODEL}", messages=Q, max_completion_tokens=8)
        assert exc.value.status_code == 502
        # The proxy stays up and says the upstream is down (its check is cached a few seconds).
        deadline = time.time() + 12
        while (h := httpx.get(proxy.base + "/health", timeout=10)).status_code == 200 and time.time() < deadline:
            time.sleep(0.5)
        assert h.status_code == 503 and h.json()["status"] == "degraded", h.text
    finally:
        if proxy:
            proxy.stop()
        if upstream.poll() is None:
            upstream.kill()


# -- in-process units (no server): model-name parsing, caps, the per-request backend --------------


def test_split_model_with_slashes_in_served_names():
    from leanthink.server.planning import split_model
    from leanthink.server.protocol import ApiError

    served = {"Qwen/Qwen3-8B", "qwen3"}
    assert split_model("Qwen/Qwen3-8B", served) is None
    assert split_model("deer/Qwen/Qwen3-8B", served) == "deer"
    assert split_model("chain-of-draft+deer/Qwen/Qwen3-8B", served) == "chain-of-draft+deer"
    assert split_model("budget(max_thinking=64)/qwen3", served) == "budget(max_thinking=64)"
    assert split_model("deer", served) == "deer"  # a bare method name: the served model
    with pytest.raises(ApiError) as exc:
        split_model("nope/Qwen/Qwen3-8B", served)
    assert exc.value.status == 400 and exc.value.code == "unknown_method"
    with pytest.raises(ApiError) as exc:
        split_model("deer/other-model", served)
    assert exc.value.status == 404


def test_cap_lowers_budgets_and_keeps_composition():
    from leanthink.methods import get_method
    from leanthink.server.planning import ANSWER_RESERVE, apply_cap

    m = apply_cap(get_method("think"), 100)
    assert m.params.max_thinking == 100 - min(ANSWER_RESERVE, 50) and m.params.max_answer == 100
    m = apply_cap(get_method("chain-of-draft+budget(max_thinking=10)"), 1000)
    assert m.spec == "chain-of-draft+budget(max_thinking=10)"
    m = apply_cap(get_method("chain-of-draft+deer"), 64)
    assert m.spec.startswith("chain-of-draft+deer(") and m.second.params.max_thinking == 32


def test_capped_backend_stops_at_cap_and_on_cancel():
    from leanthink.backends.base import SamplingParams
    from leanthink.server.metrics import Metrics
    from leanthink.server.planning import Plan
    from leanthink.server.worker import CappedBackend, Job, RequestCancelled

    from .fakes import ScriptedBackend

    inner = ScriptedBackend(lambda p: " ".join(["word"] * 100))
    plan = Plan(endpoint="chat", model_name="m", method=None, method_label="passthrough", method_spec="passthrough",
                source="default", cap=10)
    job = Job(plan, inner, Metrics(), loop=None, streaming=False)
    wb = CappedBackend(inner, 10, job)
    chunks = list(wb.stream("p", SamplingParams(max_tokens=500)))
    assert sum(c.n_tokens for c in chunks) == 10 and wb.used == 10 and wb.hit_cap
    assert list(wb.stream("p", SamplingParams(max_tokens=5)))[0].finish_reason == "length"  # nothing left

    wb2 = CappedBackend(inner, 1000, job)
    it = wb2.stream("p", SamplingParams(max_tokens=500))
    next(it)
    job.cancel("disconnect")
    before = inner.generated
    with pytest.raises(RequestCancelled):
        next(it)
    assert inner.generated <= before + 1  # the engine stream was closed, not drained


def test_tokens_saved_estimate_uses_the_served_think_baseline():
    from leanthink.result import Result, Usage
    from leanthink.server.metrics import Metrics

    m = Metrics()
    m.record_result("deer", Result(question="q", method="deer", usage=Usage(thinking=50)))
    assert b'leanthink_tokens_saved_estimate_total{method="deer"}' not in m.render()  # no baseline yet
    m.record_result("think", Result(question="q", method="think", usage=Usage(thinking=300)))
    m.record_result("think", Result(question="q", method="think", usage=Usage(thinking=100)))
    m.record_result("deer", Result(question="q", method="deer", usage=Usage(thinking=120, overhead=30)))
    m.record_result("budget", Result(question="q", method="budget", usage=Usage(thinking=400)))
    text = m.render().decode()
    assert 'leanthink_tokens_saved_estimate_total{method="deer"} 50.0' in text
    assert 'method="budget"' not in text.split("leanthink_tokens_saved_estimate_total")[1].split("# HELP")[0]
    assert "leanthink_baseline_tokens_estimate 200.0" in text
