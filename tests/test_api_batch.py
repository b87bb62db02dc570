"""The library calls people try next (issue 13, section 4): a batch call, `system=`, a
streaming iterator, readable method reprs, and errors phrased for Python callers.

All on the scripted backend: these test the API's plumbing, not an engine.
"""

from __future__ import annotations

import threading
import time

import pytest

from leanthink import get_method, solve, solve_many, stream_solve
from leanthink.api import StreamEvent, resolve_method
from leanthink.backends.base import Capabilities
from leanthink.errors import ConfigError

from .fakes import ScriptedBackend

CAPS = Capabilities(logprobs=True, prefix_continuation=True)


def echo_backend(delay: float = 0.0) -> ScriptedBackend:
    """Answers each question with its own number: `Q7` -> `... \\boxed{7}`."""

    def respond(prompt: str) -> str:
        if prompt.endswith("\\boxed{"):
            return "0}"
        if delay:
            time.sleep(delay)
        q = prompt.split("Q", 1)[1].split()[0] if "Q" in prompt else "0"
        return f"Reading question {q}.\nIt asks for {q}.\nSo the answer is \\(\\boxed{{{q}}}\\)."

    return ScriptedBackend(respond, caps=CAPS)


# -- solve([q1, q2]) and solve_many ------------------------------------------------------------------
def test_solve_with_a_list_points_to_solve_many():
    with pytest.raises(ConfigError, match=r"solve\(\) answers one question.*solve_many"):
        solve(["Q1", "Q2"], backend=echo_backend())
    with pytest.raises(ConfigError, match="question must be a string"):
        solve(42, backend=echo_backend())  # type: ignore[arg-type]


def test_solve_many_keeps_order_and_uses_one_backend():
    be = echo_backend()
    qs = [f"Q{i} what?" for i in range(5)]
    rs = solve_many(qs, "think", backend=be)
    assert [r.answer for r in rs] == [str(i) for i in range(5)]
    assert [r.question for r in rs] == qs
    assert len(be.calls) == 5  # one chain per question, all on the backend given


def test_solve_many_runs_questions_concurrently():
    be = echo_backend(delay=0.3)
    t0 = time.perf_counter()
    rs = solve_many([f"Q{i}" for i in range(4)], backend=be, concurrency=4)
    elapsed = time.perf_counter() - t0
    assert [r.answer for r in rs] == ["0", "1", "2", "3"]
    assert elapsed < 0.3 * 4 * 0.75, elapsed  # overlapped, not one after the other


def test_solve_many_loads_the_model_once(monkeypatch):
    import leanthink.api as api

    loads = []
    be = echo_backend()
    monkeypatch.setattr(api, "get_backend", lambda model=None, quiet=False: loads.append(model) or be)
    solve_many(["Q1", "Q2", "Q3"], model="some-model")
    assert loads == ["some-model"]


@pytest.mark.parametrize("bad,msg", [
    ("Q1", "takes a list of questions"),
    (["Q1", ""], r"questions\[1\] must be a non-empty string"),
    (["Q1", None], r"questions\[1\]"),
])
def test_solve_many_bad_input(bad, msg):
    with pytest.raises(ConfigError, match=msg):
        solve_many(bad, backend=echo_backend())


@pytest.mark.parametrize("concurrency", [0, -1, 1.5, True])
def test_solve_many_bad_concurrency(concurrency):
    with pytest.raises(ConfigError, match="concurrency must be a positive integer"):
        solve_many(["Q1"], backend=echo_backend(), concurrency=concurrency)


# -- system= -----------------------------------------------------------------------------------------
def test_system_prompt_reaches_the_model_and_composes_with_prompt_methods():
    be = echo_backend()
    solve("Q1", backend=be, system="You are terse.")
    assert be.calls[-1].startswith("<system>You are terse.</system><user>Q1")
    solve("Q2", "chain-of-draft", backend=be, system="You are terse.")
    assert be.calls[-1].startswith("<system>You are terse.</system>") and "minimal draft" in be.calls[-1]
    solve("Q3", backend=be)
    assert "<system>" not in be.calls[-1]
    with pytest.raises(ConfigError, match="system must be a string"):
        solve("Q1", backend=be, system=["x"])  # type: ignore[arg-type]


# -- stream_solve ----------------------------------------------------------------------------------------
def test_stream_solve_yields_reasoning_then_answer_then_the_result():
    events = list(stream_solve("Q7", backend=echo_backend()))
    kinds = [e.kind for e in events]
    assert kinds[-1] == "done" and isinstance(events[-1].result, object)
    assert "reasoning" in kinds and "answer" in kinds
    assert max(i for i, k in enumerate(kinds) if k == "reasoning") < kinds.index("answer")
    res = events[-1].result
    assert "".join(e.text for e in events if e.kind == "reasoning").strip() == res.reasoning
    assert "".join(e.text for e in events if e.kind == "answer").strip() == res.content == "So the answer is 7."
    assert res.answer == "7"


def test_stream_solve_boxed_streams_the_grading_form():
    events = list(stream_solve("Q7", backend=echo_backend(), answer_format="boxed"))
    answer = "".join(e.text for e in events if e.kind == "answer")
    assert answer.strip() == events[-1].result.answer_text == "\\boxed{7}\\)."


def test_stream_solve_checks_arguments_before_returning():
    with pytest.raises(ConfigError, match="unknown method"):
        stream_solve("Q1", "nope", backend=echo_backend())
    with pytest.raises(ConfigError, match="answer_format"):
        stream_solve("Q1", backend=echo_backend(), answer_format="latex")


def test_closing_the_stream_stops_generation():
    produced = threading.Event()
    stopped_at = []

    def respond(prompt: str) -> str:
        return " ".join(["A word."] * 2500)

    class Slow(ScriptedBackend):
        def stream(self, prompt, params):
            for i, chunk in enumerate(super().stream(prompt, params)):
                produced.set()
                stopped_at.append(i)
                time.sleep(0.001)
                yield chunk

    be = Slow(respond, caps=CAPS)
    it = stream_solve("Q1", "think(max_thinking=4000)", backend=be)
    first = next(it)
    assert isinstance(first, StreamEvent) and first.kind == "reasoning"
    it.close()  # returns once the worker has stopped
    n = len(stopped_at)
    time.sleep(0.1)
    assert len(stopped_at) == n and n < 4000  # nothing generated after close


def test_stream_solve_of_a_sampling_method_sends_the_chosen_chain_at_the_end():
    events = list(stream_solve("Q3", "sc(k=2)", backend=echo_backend()))
    assert [e.kind for e in events] == ["reasoning", "answer", "done"]
    assert events[1].text == "So the answer is 3."


# -- reprs and API-phrased errors -----------------------------------------------------------------------------
def test_methods_print_readably():
    assert repr(get_method("think")) == "<Method think(max_thinking=4096,max_answer=512)>"
    assert repr(get_method("budget(max_thinking=256)")).startswith("<Method budget(max_thinking=256,min_thinking=0,")
    assert repr(get_method("chain-of-draft+direct")) == \
        "<Method chain-of-draft(max_thinking=4096,words_per_step=5)+direct(max_answer=40)>"
    assert " at 0x" not in repr(get_method("sc(k=4)"))


def test_api_errors_do_not_mention_cli_flags():
    with pytest.raises(ConfigError) as exc:
        solve("Q1", "direct", budget=100, backend=echo_backend())
    assert "--" not in str(exc.value) and "budget=" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        resolve_method("direct", 100, budget_name="--budget")  # the CLI's wording
    assert "drop --budget" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        solve("Q1", get_method("think"), budget=10, backend=echo_backend())
    assert "--" not in str(exc.value) and "Method instance" in str(exc.value)
