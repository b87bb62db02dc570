"""The proxy's protocol in process: `httpx.ASGITransport` against the real FastAPI app (lifespan
included), over a scripted backend, driven by raw HTTP and by the official `openai` client.

Everything here needs no socket and no model: health and model listing, the SSE wire format,
method selection, choices, the legacy completions endpoint, OpenAI-style errors, auth and
admission (429). What does need a real socket or model (disconnects, the token cap on a real
engine, an upstream server) stays in tests/test_server.py as subprocess smoke tests.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from leanthink.server.app import create_app
from leanthink.server.config import ServerConfig

from .fakes import ScriptedBackend

pytestmark = pytest.mark.timeout(60)

MAIN = "scripted-qwen2.5"
Q = [{"role": "user", "content": "What is 2+3?"}]
KEY = "sekrit-key"
CHAIN = "First, 2 plus 3 is five because we add them.\n\nSo the sum is 5.\n\\boxed{5}"


def scripted(respond=None) -> ScriptedBackend:
    return ScriptedBackend(respond or (lambda p: CHAIN), model_id=MAIN)


def app_for(backend=None, **config):
    cfg = {"max_concurrent": 2, "max_n": 2, "max_tokens_limit": 512, **config}
    return create_app(ServerConfig(model=MAIN, **cfg), backend=backend or scripted())


def run(app, fn, key: str | None = "unused"):
    """Start the app, run `await fn(http, client)` with a raw httpx client and an openai
    client on the same in-process transport, stop the app."""

    async def go():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30) as http:
                client = openai.AsyncOpenAI(base_url="http://test/v1", api_key=key, http_client=http, max_retries=0)
                return await fn(http, client)

    return asyncio.run(go())


def metrics(text: str) -> dict[str, float]:
    """Sum of each sample over its labels, plus `name{label=value}` entries."""
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[s.name] = out.get(s.name, 0.0) + s.value
            for k, v in s.labels.items():
                out[f"{s.name}{{{k}={v}}}"] = out.get(f"{s.name}{{{k}={v}}}", 0.0) + s.value
    return out


def error(resp: httpx.Response, status: int) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    return body["error"]


# -- basics -------------------------------------------------------------------------------------


def test_health_and_models():
    async def fn(http, client):
        return (await http.get("/health")).json(), [m.id async for m in client.models.list()]

    health, ids = run(app_for(), fn)
    assert health == {"status": "ok", "model": MAIN, "backend": "scripted", "running": 0, "queued": 0}
    assert ids[0] == MAIN
    assert {f"deer/{MAIN}", f"think/{MAIN}", f"passthrough/{MAIN}"} <= set(ids)


def test_sse_wire_format():
    async def fn(http, client):
        r = await http.post("/v1/chat/completions", json={"model": MAIN, "messages": Q, "max_tokens": 64, "stream": True,
                                                           "stream_options": {"include_usage": True}})
        return r

    r = run(app_for(), fn)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["cache-control"] == "no-cache"
    events = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["object"] == "chat.completion.chunk" and chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    reasoning = "".join(c["choices"][0]["delta"].get("reasoning_content") or "" for c in chunks if c["choices"])
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert reasoning.startswith("First, 2 plus 3 is five") and "5" in content
    finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finish == ["stop"]
    usage = chunks[-1]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] > 0
    assert usage["usage"]["completion_tokens_details"]["reasoning_tokens"] > 0


# -- method selection ---------------------------------------------------------------------------


def test_method_via_model_prefix_body_and_reasoning_effort():
    async def fn(http, client):
        c = client.chat.completions
        return [
            await c.create(model=f"direct/{MAIN}", messages=Q, max_completion_tokens=40),
            await c.create(model=f"chain-of-draft+think/{MAIN}", messages=Q, max_completion_tokens=40),
            await c.create(model=MAIN, messages=Q, max_completion_tokens=60,
                           extra_body={"leanthink": {"method": "budget", "max_thinking": 4}}),
            await c.create(model=f"deer/{MAIN}", messages=Q, max_completion_tokens=40,
                           extra_body={"leanthink": {"threshold": 0.5}}),
            await c.create(model=MAIN, messages=Q, reasoning_effort="low", max_completion_tokens=400),
            await c.create(model=f"direct/{MAIN}", messages=Q, reasoning_effort="high", max_completion_tokens=30),
            await http.post("/v1/chat/completions", json={"model": MAIN, "messages": Q, "reasoning_effort": "extreme"}),
        ]

    direct, composed, budget, deer, low, explicit, bad = run(app_for(), fn)
    assert direct.leanthink["method"].startswith("direct") and direct.leanthink["method_source"] == "model"
    assert direct.model == f"direct/{MAIN}"
    assert composed.leanthink["method"].startswith("chain-of-draft+think")
    ext = budget.leanthink
    assert ext["method"] == "budget(max_thinking=4)" and ext["method_source"] == "body"
    assert 0 < budget.usage.completion_tokens_details.reasoning_tokens <= 4
    assert any(ev["event"] == "budget" for ev in ext["trace"])
    assert deer.leanthink["method"].startswith("deer(threshold=0.5")  # parameters alone go to the prefix's method
    assert low.leanthink["method"] == "budget(max_thinking=256)" and low.leanthink["method_source"] == "reasoning_effort"
    assert explicit.leanthink["method"].startswith("direct")  # an explicit method wins over reasoning_effort
    assert explicit.usage.completion_tokens_details.reasoning_tokens == 0
    assert error(bad, 400)["param"] == "reasoning_effort"


def test_n_choices_and_legacy_completions():
    async def fn(http, client):
        chat = await client.chat.completions.create(model=MAIN, messages=Q, n=2, max_completion_tokens=16, temperature=0.8)
        legacy = await client.completions.create(model=MAIN, prompt="What is 2+3?", max_tokens=200)
        return chat, legacy

    chat, legacy = run(app_for(), fn)
    assert [c.index for c in chat.choices] == [0, 1] and 0 < chat.usage.completion_tokens <= 32
    assert legacy.object == "text_completion" and legacy.choices[0].text == "5"  # natural form: the answer as text
    assert legacy.choices[0].finish_reason == "stop" and 0 < legacy.usage.completion_tokens <= 200


# -- errors -------------------------------------------------------------------------------------


def test_openai_style_errors():
    big = {"model": MAIN, "messages": [{"role": "user", "content": "x" * 1_200_000}]}
    bodies = [
        ({"model": MAIN, "messages": Q, "leanthink": {"method": "nope"}}, 400),
        ({"model": f"nope/{MAIN}", "messages": Q}, 400),
        ({"model": MAIN, "messages": Q, "leanthink": {"method": "deer", "threshold": 5}}, 400),
        ({"model": MAIN, "messages": Q, "leanthink": {"method": "think", "bogus": 1}}, 400),
        ({"model": MAIN, "messages": Q, "n": 3}, 400),
        ({"model": MAIN, "messages": Q, "max_completion_tokens": 100000}, 400),
        ({"model": MAIN, "messages": Q, "tools": [{"type": "function"}]}, 400),
        ({"model": MAIN, "messages": [{"role": "assistant", "content": "hi"}]}, 400),
        ({"model": "gpt-4", "messages": Q}, 404),
        ({"model": MAIN, "messages": "not a list"}, 422),
        ({"messages": Q}, 422),
        (big, 413),
    ]

    async def fn(http, client):
        out = [await http.post("/v1/chat/completions", json=b) for b, _ in bodies]
        out.append(await http.post("/v1/chat/completions", content=b"{not json"))
        out.append(await http.get("/v1/nothing"))
        try:
            await client.chat.completions.create(model=MAIN, messages=Q, extra_body={"leanthink": {"method": "nope"}})
        except openai.BadRequestError as exc:
            out.append(exc)
        out.append((await http.get("/metrics")).text)
        return out

    *resps, bad_json, nothing, typed, text = run(app_for(), fn)
    errs = [error(r, status) for r, (_, status) in zip(resps, bodies)]
    assert errs[0]["code"] == "unknown_method" and "Known methods" in errs[0]["message"]
    assert errs[0]["type"] == "invalid_request_error"
    assert errs[1]["param"] == "model" and "unknown method" in errs[1]["message"]
    assert "threshold" in errs[2]["message"] and "bogus" in errs[3]["message"]
    assert [errs[4]["param"], errs[5]["param"], errs[6]["param"]] == ["n", "max_completion_tokens", "tools"]
    assert errs[8]["code"] == "model_not_found"
    assert errs[9]["code"] == "invalid_schema" and errs[10]["param"] == "model"
    assert errs[11]["code"] == "body_too_large"
    assert error(bad_json, 400)["code"] == "invalid_json"
    assert error(nothing, 404)["code"] == "not_found"
    assert isinstance(typed, openai.BadRequestError)
    assert typed.status_code == 400 and typed.body["code"] == "unknown_method"
    m = metrics(text)
    assert m["leanthink_errors_total{status=400}"] == 10 and m["leanthink_errors_total{status=413}"] == 1


# -- auth and admission -------------------------------------------------------------------------


def test_api_key():
    app = app_for(api_keys=[KEY])

    async def fn(http, client):
        out = []
        try:
            await client.chat.completions.create(model=MAIN, messages=Q, max_completion_tokens=8)
        except openai.AuthenticationError as exc:
            out.append(exc)
        out.append(await http.post("/v1/chat/completions", json={"model": MAIN, "messages": Q}))
        out.append(await http.get("/v1/models"))
        ok = openai.AsyncOpenAI(base_url="http://test/v1", api_key=KEY, http_client=http, max_retries=0)
        out.append(await ok.chat.completions.create(model=MAIN, messages=Q, max_completion_tokens=8))
        out.append(await http.get("/health"))
        return out

    wrong, missing, models, answered, health = run(app, fn, key="wrong")
    assert wrong.status_code == 401 and wrong.body["code"] == "invalid_api_key"
    assert error(missing, 401)["code"] == "missing_api_key"
    assert models.status_code == 401
    assert answered.choices[0].message.content is not None
    assert health.status_code == 200  # probes need no key


def test_queue_full_gives_429_and_the_slot_is_released():
    """One slot, no queue: while a request generates, the next one gets a 429 with Retry-After;
    once it is done, the slot is free again."""
    release, started = threading.Event(), threading.Event()

    def respond(prompt: str) -> str:
        started.set()
        release.wait(20)  # the worker thread holds the only slot until the test lets go
        return CHAIN

    app = app_for(scripted(respond), max_concurrent=1, max_queue=0)

    async def fn(http, client):
        body = {"model": MAIN, "messages": Q, "max_completion_tokens": 32}
        first = asyncio.create_task(http.post("/v1/chat/completions", json=body))
        await asyncio.to_thread(started.wait, 10)
        health = (await http.get("/health")).json()
        second = await http.post("/v1/chat/completions", json=body)
        release.set()
        first_done = await first
        third = await http.post("/v1/chat/completions", json=body)
        return health, second, first_done, third, (await http.get("/metrics")).text

    health, second, first, third, text = run(app, fn)
    assert health["running"] == 1 and health["queued"] == 0
    assert error(second, 429)["code"] == "queue_full" and second.headers["retry-after"] == "1"
    assert first.status_code == 200 and third.status_code == 200
    assert metrics(text)["leanthink_errors_total{status=429}"] == 1


# -- a stream cut at the deadline -----------------------------------------------------------------


class StallingBackend(ScriptedBackend):
    """Streams a few tokens, then stalls (as a hung engine would) until the request is cancelled."""

    def __init__(self, tokens_before_stall: int = 24):  # past the first sentence: it is sent
        super().__init__(lambda p: CHAIN, model_id=MAIN)
        self.before = tokens_before_stall

    def stream(self, prompt, params):
        for i, chunk in enumerate(super().stream(prompt, params)):
            if i == self.before:
                time.sleep(2.0)  # past the request's deadline; the worker then sees the cancel
            yield chunk


def test_a_stream_that_stalls_mid_way_ends_with_a_504_error_event():
    be = StallingBackend()
    app = app_for(be, request_timeout=1.0)

    async def fn(http, client):
        r = await http.post("/v1/chat/completions", json={"model": MAIN, "messages": Q, "max_tokens": 64, "stream": True})
        await asyncio.sleep(1.5)  # the worker wakes up, sees its cancel and frees the slot
        return r, (await http.get("/metrics")).text, (await http.get("/health")).json()

    r, text, health = run(app, fn)
    assert r.status_code == 200  # the headers went out with the first event
    events = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    sent = "".join(c["choices"][0]["delta"].get("reasoning_content") or "" for c in chunks if c.get("choices"))
    assert sent == "First, 2 plus 3 is five because we add them.\n\n"  # what was generated in time was sent
    assert chunks[-1] == {"error": {"message": "the request did not finish within 1s", "type": "timeout_error",
                                    "param": None, "code": "timeout"}}
    m = metrics(text)
    assert m["leanthink_errors_total{status=504}"] == 1 and m["leanthink_cancelled_total{reason=timeout}"] == 1
    assert health["running"] == 0
