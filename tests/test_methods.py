"""Control flow of the registry and the chain engine, on a scripted backend."""

import pytest

from leanthink import solve
from leanthink.api import resolve_method
from leanthink.backends.base import Capabilities
from leanthink.errors import CapabilityError, ConfigError
from leanthink.methods import REGISTRY, get_method
from leanthink.methods.base import Method, Task

from .fakes import ScriptedBackend


def test_registry_lists_baselines():
    get_method("think")
    assert {"think", "direct"} <= set(REGISTRY)


def test_spec_parsing_and_canonical_form():
    m = get_method("think(max_thinking=128)")
    assert m.params.max_thinking == 128
    assert m.spec == "think(max_thinking=128)"
    assert get_method("think").spec == "think"


@pytest.mark.parametrize(
    "spec,msg",
    [
        ("nope", "unknown method 'nope'"),
        ("", "empty"),
        ("think(max_thinking=0)", "max_thinking"),
        ("think(max_thinking=-5)", "greater than 0"),
        ("think(banana=3)", "unknown parameter"),
        ("think(max_thinking)", "key=value"),
        ("think+direct", "first method must be prompt-level"),
        ("a+b+c", "at most two"),
    ],
)
def test_bad_specs(spec, msg):
    with pytest.raises(ConfigError, match=msg):
        get_method(spec)


@pytest.mark.parametrize("budget", [0, -1, True, 2.5])
def test_bad_budget(budget):
    with pytest.raises(ConfigError, match="budget"):
        resolve_method("think", budget)


def test_budget_on_method_without_budget():
    with pytest.raises(ConfigError, match="no token budget"):
        resolve_method("direct", 100)


def test_budget_sets_declared_param():
    assert resolve_method("think", 64).params.max_thinking == 64


def test_empty_question_rejected():
    be = ScriptedBackend(lambda p: "x")
    with pytest.raises(ConfigError, match="empty"):
        solve("   ", backend=be)


def test_think_splits_reasoning_and_answer():
    be = ScriptedBackend(lambda p: "3 plus 4 is 7.\n</think>\n\nSo \\boxed{7}", model_id="scripted-qwen3")
    r = solve("What is 3+4?", backend=be)
    assert r.answer == "7"
    assert r.reasoning == "3 plus 4 is 7."
    assert r.finish_reason == "stop"
    assert r.usage.thinking > 0 and r.usage.answer > 0 and r.usage.forced == 0
    assert not r.emulated_thinking  # model id says qwen3: a native reasoning model
    assert be.calls[0].endswith("<think>\n") and "\\boxed{}" in be.calls[0]


def test_emulated_thinking_on_instruct_model():
    be = ScriptedBackend(lambda p: "3 plus 4 is 7. So \\boxed{7}.")
    r = solve("What is 3+4?", backend=be)
    assert r.emulated_thinking and r.answer == "7"
    assert r.reasoning == "3 plus 4 is 7. So" and r.answer_text == "\\boxed{7}."
    assert "<think>" not in be.calls[0]


def test_think_cap_forces_answer_and_counts_forced_tokens():
    def respond(prompt):
        if prompt.endswith("\\boxed{"):
            return "12} and more text"
        return " ".join(["word"] * 200)

    be = ScriptedBackend(respond, model_id="scripted-qwen3")
    r = solve("q?", backend=be, method="think(max_thinking=10)")
    assert r.finish_reason == "budget"
    assert r.usage.thinking == 10
    assert r.usage.forced > 0
    assert r.answer == "12"
    assert r.trace[0].event == "force_answer" and r.trace[0].detail["reason"] == "budget"
    # the forced continuation starts from the cut reasoning + end-of-thinking marker
    assert be.calls[1].endswith("</think>\n\n**Final Answer**\n\\boxed{")


def test_unclosed_thinking_is_forced():
    be = ScriptedBackend(lambda p: "5}" if p.endswith("{") else "I think it is 5")
    r = solve("q?", backend=be)
    assert r.finish_reason == "forced" and r.answer == "5"


def test_direct_has_no_thinking():
    be = ScriptedBackend(lambda p: "9}", model_id="scripted-qwen3")
    r = solve("q?", method="direct", backend=be)
    assert r.answer == "9" and r.usage.thinking == 0 and r.reasoning == ""
    assert be.calls[0].endswith("<think>\n\n</think>\n\n**Final Answer**\n\\boxed{")


def test_missing_capability_fails_up_front():
    class NeedsHidden(Method):
        name = "needs-hidden-test"
        needs = frozenset({"hidden_states"})

        def run(self, task):  # pragma: no cover - must not be reached
            raise AssertionError

    be = ScriptedBackend(lambda p: "x", caps=Capabilities(hidden_states=False))
    with pytest.raises(CapabilityError, match="hidden_states"):
        NeedsHidden()(Task.create("q", be))
    assert be.calls == []


# --------------------------------------------------------------------------- the chain's protocol


def _protocol_chain():
    from leanthink.methods.engine import Chain, build_prompt

    from .fakes import Script

    script = Script("one two three four five six seven eight nine ten\n</think>\n\n\\boxed{1}", probe="1}", ignore=(" HINT",))
    be = ScriptedBackend(script, model_id="scripted-qwen3")
    task = Task.create("q?", be)
    return Chain(task), build_prompt(task), be


def _scripted_controller(seen):
    """Pause at token 3 (then resume), inject at 5, exit at 9."""
    from leanthink.methods.engine import Exit, Inject, Pause

    def controller(s):
        seen.append((s.n_tokens, s.paused))
        if s.n_tokens == 3:
            return None if s.paused else Pause()
        if s.n_tokens == 5:
            return Inject(" HINT", event="nudge", detail={"k": 1})
        if s.n_tokens == 9:
            return Exit("enough", detail={"at": 9})
        return None

    return controller


def test_chain_think_yields_the_events_of_pause_inject_and_exit():
    from leanthink.methods.chain_events import Exit, Injected, TextOut, ThinkingDone, Tokens

    seen = []
    chain, prompt, be = _protocol_chain()
    events = list(chain.think(prompt, max_thinking=100, controller=_scripted_controller(seen)))
    # the controller is asked after every thinking token, and once more (paused) after a pause
    assert seen == [(1, False), (2, False), (3, False), (3, True), (4, False), (5, False),
                    (6, False), (7, False), (8, False), (9, False)]
    assert sum(e.n for e in events if isinstance(e, Tokens) and e.phase == "thinking") == 9
    assert not any(isinstance(e, Tokens) and e.phase == "answer" for e in events)
    injected = [e for e in events if isinstance(e, Injected)]
    assert [(e.decision.event, e.at_token, e.tokens) for e in injected] == [("nudge", 5, 2)]
    assert "".join(e.text for e in events if isinstance(e, TextOut)) == "one two three HINT four five"
    done = events[-1]
    assert isinstance(done, ThinkingDone) and not done.closed and done.reasoning == "one two three HINT four five"
    assert isinstance(done.decision, Exit) and done.decision.reason == "enough"
    # streams: the chain, the resume after the pause (from the text so far), the restart after the hint
    assert [c[len(prompt):] for c in be.calls] == ["", "one two", "one two three HINT"]


def test_chain_run_folds_the_events_into_the_output():
    seen, shown = [], []
    chain, prompt, be = _protocol_chain()
    out = chain.run(prompt, max_thinking=100, controller=_scripted_controller(seen),
                    on_text=lambda channel, text: shown.append((channel, text)))
    assert out.reasoning == "one two three HINT four five" and out.answer_text == "**Final Answer**\n\\boxed{1}"
    assert (out.thinking_tokens, out.answer_tokens, out.forced_tokens, out.overhead_tokens) == (9, 1, 2 + 8, 0)
    assert out.finish_reason == "exit" and not out.closed_naturally
    assert [(e.event, e.at_token, e.detail) for e in out.trace] == [
        ("nudge", 5, {"k": 1}), ("force_answer", 9, {"reason": "enough", "at": 9})]
    assert {c for c, _ in shown} == {"reasoning"} and "".join(t for _, t in shown) == out.reasoning


def test_chain_refuses_a_pause_while_paused():
    from leanthink.methods.engine import Pause

    chain, prompt, be = _protocol_chain()
    with pytest.raises(RuntimeError, match="while paused"):
        chain.run(prompt, max_thinking=100, controller=lambda s: Pause())
