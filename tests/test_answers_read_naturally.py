"""What an app sees reads naturally (issue 13, section 2).

Through the proxy `content` is the model's own final answer as text (`natural`, the
default): no `\\boxed{}`, no `\\(`, and when a method cuts the thinking the model writes that
answer itself (its tokens are counted). The grading form is kept where a caller asks for it:
`leanthink.answer_format: "boxed"`, `--answer-format boxed`, bench and `solve()`.

Fast tests use the scripted backend (an emulated-thinking `qwen2.5` and a native `qwen3`);
the slow ones drive the proxy in process with the real SmolLM2 and Qwen2.5-Coder-0.5B, and
compare the prompt an in-process engine and an upstream server get.
"""

from __future__ import annotations

import asyncio
import json
import random
import re

import httpx
import pytest

from leanthink import solve
from leanthink.backends.base import Capabilities
from leanthink.readable import AnswerStream, natural_split, plain
from leanthink.server.app import create_app
from leanthink.server.config import ServerConfig

from .fakes import ScriptedBackend

CAPS = Capabilities(logprobs=True, prefix_continuation=True)
CHAIN = ("Janet has 3 apples. She buys 5 more, so 3 + 5 = 8.\n\nShe gives 2 away: 8 - 2 = 6.\n"
         "So Janet has \\(\\boxed{6}\\) apples.")
LEFTOVERS = re.compile(r"\\boxed|\\\(|\\\)|\\\[|\\\]|\\frac|\\text|\*\*Final Answer\*\*")


def emulated(chain: str = CHAIN) -> ScriptedBackend:
    """An instruct model: writes `chain` for the question, completes the natural lead with a
    sentence (then goes on, which must be cut), and a forced `\\boxed{` with `6}`."""

    def respond(prompt: str) -> str:
        if prompt.endswith("So the final answer is"):
            return " \\(\\boxed{6}\\).\n\nLet me also check the units again."
        if prompt.endswith("\\boxed{"):
            return "6}"
        if prompt.endswith("<assistant>"):
            return chain
        return "more text"

    return ScriptedBackend(respond, caps=CAPS)


def native() -> ScriptedBackend:
    """A reasoning model (qwen3 family): thinks at length; after `</think>` it answers."""

    def respond(prompt: str) -> str:
        if prompt.endswith("</think>\n\n"):
            return "Janet has $\\boxed{6}$ apples left."
        if prompt.endswith("\\boxed{"):
            return "6}"
        return "Let me think. " * 40 + "\n</think>\n\nShe has 6."

    return ScriptedBackend(respond, model_id="scripted-qwen3", caps=CAPS)


# -- plain text and the clean split ------------------------------------------------------------
@pytest.mark.parametrize("raw,shown", [
    ("\\boxed{40}\\).", "40."),
    ("**Final Answer**\n\\boxed{6}", "6"),
    ("So the total is \\(\\boxed{40}\\).", "So the total is 40."),
    ("The total cost is:\n\\[\n\\boxed{12}\n\\]", "The total cost is:\n12"),
    ("The answer is $\\boxed{12}$.", "The answer is 12."),
    ("It costs $12 and $5.", "It costs $12 and $5."),
    ("\\(\\frac{1}{2}\\) of \\(3 \\times 4\\) is \\(\\boxed{6}\\)", "1/2 of 3 × 4 is 6"),
    ("\\boxed{\\text{12 dollars}}", "12 dollars"),
    ("\\boxed{\\frac{a+1}{2}}", "(a+1)/2"),
])
def test_plain_reads_as_text(raw, shown):
    assert plain(raw) == shown


def test_emulated_split_moves_the_sentence_that_gives_the_answer():
    r, a, lead = natural_split("Step 1: 3 + 4 = 7.\nSo the total is \\(", "\\boxed{40}\\).")
    assert (r, a, lead) == ("Step 1: 3 + 4 = 7.", "So the total is \\(\\boxed{40}\\).", "So the total is \\(")
    r, a, _ = natural_split("x = 5. The total cost is:\n\\[\n", "\\boxed{12}\n\\]")
    assert r == "x = 5." and plain(a) == "The total cost is:\n12"
    r, a, lead = natural_split("The answer is 12.", "\\boxed{12}")  # a finished sentence stays
    assert (r, a, lead) == ("The answer is 12.", "\\boxed{12}", "")


def _stream_pieces(text: str, rng: random.Random) -> list[str]:
    cuts = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, rng.randint(1, 12)))) if len(text) > 1 else []
    return [text[a:b] for a, b in zip([0] + cuts, cuts + [len(text)])]


def test_streamed_text_reads_exactly_like_the_result():
    """Random reasoning texts, split into random deltas: the streamed reasoning and answer equal
    the non-streamed split and plain text, and the held-back position never moves back."""
    rng = random.Random(7)
    words = ["Janet", "has", "3.5", "apples.", "So", "the", "total", "is", "\\(", "\\[", "$", ":", "\n", "\n\n",
             "x = 5.", "Wait,", "(12)", "**Answer:**", "1.", "!", "?", "a-long-word-without-any-end" * 3]
    for _ in range(600):
        reasoning = " ".join(rng.choice(words) for _ in range(rng.randint(1, 60)))
        answer = rng.choice(["\\boxed{40}\\).", "\\boxed{6} apples.", "\\boxed{\\frac{1}{2}}\n\\]"])
        want_r, want_a, _ = natural_split(reasoning, answer)
        shaper, got, last = AnswerStream(emulated=True), {"reasoning": "", "content": ""}, 0
        for piece in _stream_pieces(reasoning, rng):
            for ch, t in shaper.feed("reasoning", piece):
                got[ch] += t
            assert len(got["reasoning"]) >= last
            last = len(got["reasoning"])
        for piece in _stream_pieces(answer, rng):
            for ch, t in shaper.feed("content", piece):
                got[ch] += t
        for ch, t in shaper.flush():
            got[ch] += t
        assert got["reasoning"].strip() == want_r, (reasoning, got)
        assert got["content"].strip() == plain(want_a), (reasoning, got)


# -- the library: same chain, two ways to write the answer ----------------------------------------
@pytest.mark.parametrize("method", ["think", "budget(max_thinking=8)", "deer"])
def test_natural_answers_have_no_grading_form(method):
    be = emulated()
    boxed, natural = solve("q", method, backend=be), solve("q", method, backend=be, answer_format="natural")
    assert "\\boxed{6}" in boxed.answer_text and boxed.answer == natural.answer == "6"
    assert natural.content and not LEFTOVERS.search(natural.content), natural.content
    assert "6" in natural.content and "check the units" not in natural.answer_text
    assert not natural.reasoning.rstrip().endswith(("\\(", "is")), natural.reasoning
    assert natural.usage.total == sum(getattr(natural.usage, k) for k in ("thinking", "answer", "forced", "overhead"))


def test_natural_close_moves_the_answer_sentence_and_its_tokens():
    be = emulated()
    boxed, natural = solve("q", backend=be), solve("q", backend=be, answer_format="natural")
    assert boxed.reasoning.endswith("So Janet has \\(") and boxed.answer_text.startswith("\\boxed{6}")
    assert natural.reasoning.endswith("8 - 2 = 6.") and natural.content == "So Janet has 6 apples."
    moved = be.count_tokens("So Janet has \\(")
    assert natural.usage.thinking == boxed.usage.thinking - moved
    assert natural.usage.answer == boxed.usage.answer + moved and natural.usage.total == boxed.usage.total


def test_forced_natural_answer_is_written_by_the_model_and_counted():
    be = emulated()
    boxed = solve("q", "budget(max_thinking=8)", backend=be)
    natural = solve("q", "budget(max_thinking=8)", backend=be, answer_format="natural")
    assert boxed.answer_text == "**Final Answer**\n\\boxed{6}"
    assert natural.answer_text == "So the final answer is \\(\\boxed{6}\\)." and natural.content == "So the final answer is 6."
    assert natural.usage.forced == be.count_tokens("\n\nSo the final answer is")
    assert natural.usage.answer == be.count_tokens(" \\(\\boxed{6}\\).\n")  # generated up to the end of its line
    assert natural.usage.thinking == boxed.usage.thinking == 8


def test_deer_exit_in_natural_form_keeps_the_probe_as_overhead():
    be = emulated()
    boxed = solve("q", "deer", backend=be)
    natural = solve("q", "deer", backend=be, answer_format="natural")
    assert boxed.finish_reason == natural.finish_reason == "exit" and boxed.reasoning == natural.reasoning
    assert natural.usage.overhead > boxed.usage.overhead  # the deciding probe is not the answer here
    assert natural.content == "So the final answer is 6."


def test_native_model_answers_after_its_end_marker():
    be = native()
    r = solve("q", "budget(max_thinking=10)", backend=be, answer_format="natural")
    assert be.calls[-1].endswith("\n</think>\n\n")
    assert r.answer_text == "Janet has $\\boxed{6}$ apples left." and r.content == "Janet has 6 apples left."
    assert r.answer == "6" and r.usage.forced == be.count_tokens("\n</think>\n\n")


def test_bench_asks_for_the_boxed_form(tmp_path):
    from leanthink.eval.runner import BenchConfig, run_bench

    store = run_bench(BenchConfig(model="scripted", dataset="builtin", methods=["budget(max_thinking=8)"],
                                  out=str(tmp_path / "b"), limit=2, oracle=False), backend=emulated())
    recs = store.records()
    assert len(recs) == 2 and all(r["answer_text"] == "**Final Answer**\n\\boxed{6}" for r in recs)


# -- the proxy ---------------------------------------------------------------------------------------
def _app(backend, **config):
    return create_app(ServerConfig(model=backend.model_id, **config), backend=backend)


def _ask(app, bodies: list[dict]) -> list:
    async def go():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=120) as c:
                out = []
                for b in bodies:
                    r = await c.post("/v1/chat/completions", json=b)
                    out.append(_events(r.text) if b.get("stream") else r)
                return out

    return asyncio.run(go())


def _events(text: str) -> dict:
    """A streamed response, gathered: reasoning, content, and the final usage chunk."""
    got = {"reasoning": "", "content": "", "usage": None}
    for line in text.splitlines():
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        obj = json.loads(line[6:])
        for c in obj.get("choices") or []:
            got["reasoning"] += c["delta"].get("reasoning_content") or ""
            got["content"] += c["delta"].get("content") or ""
        if obj.get("usage"):
            got["usage"] = obj["usage"]
    return got


def _body(method: str, stream: bool = False, **lt) -> dict:
    return {"model": "scripted-qwen2.5", "messages": [{"role": "user", "content": "Janet has 3 apples..."}],
            "stream": stream, "stream_options": {"include_usage": True} if stream else None,
            "leanthink": {"method": method, **lt}}


@pytest.mark.parametrize("method", ["think", "deer", "budget(max_thinking=8)"])
def test_proxy_content_is_natural_by_default_and_boxed_when_asked(method):
    plain_r, streamed, boxed_r, boxed_s = _ask(_app(emulated()), [
        _body(method), _body(method, stream=True), _body(method, answer_format="boxed"),
        _body(method, stream=True, answer_format="boxed")])
    msg = plain_r.json()["choices"][0]["message"]
    assert msg["content"] and not LEFTOVERS.search(msg["content"]), msg
    assert streamed["content"].strip() == msg["content"] and not LEFTOVERS.search(streamed["reasoning"][-5:])
    assert streamed["reasoning"].strip() == msg["reasoning_content"]
    assert "\\boxed{6}" in boxed_r.json()["choices"][0]["message"]["content"]
    assert "\\boxed{6}" in boxed_s["content"]
    u = plain_r.json()["usage"]
    assert u["leanthink"]["method_tokens"] == sum(u["leanthink"][k] for k in
                                                  ("thinking_tokens", "answer_tokens", "forced_tokens", "overhead_tokens"))
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"] and "total_tokens" not in u["leanthink"]


def test_server_flag_and_bad_value():
    boxed, bad = _ask(_app(emulated(), answer_format="boxed"), [_body("budget(max_thinking=8)"),
                                                                 _body("think", answer_format="latex")])
    assert boxed.json()["choices"][0]["message"]["content"] == "**Final Answer**\n\\boxed{6}"
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "leanthink.answer_format"


# -- real models ---------------------------------------------------------------------------------------
GSM8K_Q = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
           "How many clips did Natalia sell altogether in April and May?")


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("method", ["think", "deer", "budget(max_thinking=48)"])
def test_real_model_through_the_proxy(small, method):
    """Qwen2.5-Coder-0.5B on a GSM8K question: natural content by default (non-streaming and
    streaming), the boxed form when asked."""
    body = {"model": small.model_id, "messages": [{"role": "user", "content": GSM8K_Q}], "max_completion_tokens": 400,
            "leanthink": {"method": method}}
    r, s, b = _ask(_app(small), [body, {**body, "stream": True},
                                 {**body, "leanthink": {"method": method, "answer_format": "boxed"}}])
    content = r.json()["choices"][0]["message"]["content"]
    assert content.strip() and not LEFTOVERS.search(content), content
    assert s["content"].strip() and not LEFTOVERS.search(s["content"]), s["content"]
    assert "\\boxed" in b.json()["choices"][0]["message"]["content"]


@pytest.mark.slow
def test_same_prompt_in_process_and_through_an_upstream(tiny, llama_server):
    """SmolLM2's own template adds a default system message that plain ChatML lacks: the
    model's own template (named by preset, .gguf file, or taken from `tokenizer=`) gives the
    upstream path the in-process prompt, token for token."""
    from leanthink.backends import load_backend

    from .conftest import smollm_path

    msgs = [{"role": "user", "content": "What is 2+3?"}]
    local = tiny.render_chat(msgs)
    n = tiny.count_tokens(local)
    for option in ("template=smollm2-135m", f"template={smollm_path()}", f"tokenizer={smollm_path()}"):
        up = load_backend(f"openai:{llama_server}#smollm2-135m?{option}")
        assert up.render_chat(msgs) == local, option
        assert up.count_tokens(up.render_chat(msgs)) == n, option
        assert solve("What is 2+3?", "direct", backend=up).usage.prompt == solve("What is 2+3?", "direct", backend=tiny).usage.prompt
    chatml = load_backend(f"openai:{llama_server}#smollm2-135m?template=chatml")
    assert chatml.count_tokens(chatml.render_chat(msgs)) < n  # why the README does not recommend it here
