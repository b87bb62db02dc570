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
