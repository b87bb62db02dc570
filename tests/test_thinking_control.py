"""Every thinking-control method against a real model (Qwen2.5-Coder-0.5B): its mechanism fires."""

import pytest

from leanthink import solve
from leanthink.errors import ConfigError
from leanthink.methods import get_method
from leanthink.methods.prompting import route_by_rules

EASY = "What is 12 + 30?"
WORD = "A robe takes 2 bolts of blue fiber and half that much white fiber. How many bolts in total does it take?"


def events(r):
    return [e.event for e in r.trace]


def test_prompt_methods_change_only_the_prompt(small):
    r = solve(EASY, method="chain-of-draft(max_thinking=200)", backend=small)
    assert "5 words at most" in r.prompt and r.answer is not None
    r = solve(EASY, method="concise-cot(word_limit=30,max_thinking=200)", backend=small)
    assert "Limit your reasoning to 30 words" in r.prompt


def test_sketch_of_thought_routes_and_counts_router_tokens(small):
    r = solve(WORD, method="sketch-of-thought(max_thinking=200)", backend=small)
    route = next(e for e in r.trace if e.event == "route")
    assert route.detail["router"].startswith("llm") and route.detail["paradigm"] in (
        "conceptual_chaining", "chunked_symbolism", "expert_lexicons")
    assert r.usage.overhead >= 1
    fixed = solve(WORD, method="sketch-of-thought(paradigm=chunked_symbolism,max_thinking=100)", backend=small)
    assert "symbolic chunks" in fixed.prompt and fixed.usage.overhead == 0
    assert route_by_rules("What is 3 + 4 * 2?") == "chunked_symbolism"
    assert route_by_rules("Which legal statute applies here?") == "expert_lexicons"
    assert route_by_rules("Is a whale a fish?") == "conceptual_chaining"


def test_tale_estimates_a_budget_as_overhead(small):
    r = solve(WORD, method="tale(max_thinking=200,enforce=true)", backend=small)
    est = next(e for e in r.trace if e.event == "estimate_budget")
    assert 16 <= est.detail["budget"] <= 1024
    assert f"use less than {est.detail['budget']} tokens" in r.prompt
    assert r.usage.overhead > 0
    assert r.usage.thinking <= est.detail["budget"]


@pytest.mark.parametrize("cap", [8, 40])
def test_budget_never_exceeds_cap_and_always_answers(small, cap):
    r = solve(WORD, method=f"budget(max_thinking={cap})", backend=small)
    assert r.usage.thinking <= cap
    assert r.answer not in (None, "")
    budget_ev = next(e for e in r.trace if e.event == "budget")
    assert budget_ev.detail["fired"] == (r.finish_reason == "budget")
    if r.finish_reason == "budget":
        assert r.usage.thinking == cap and r.usage.forced > 0


def test_budget_min_thinking_suppresses_early_end(small):
    base = solve(EASY, method="think", backend=small)
    floor = base.usage.thinking + 30
    r = solve(EASY, method=f"budget(min_thinking={floor},max_thinking={floor + 200})", backend=small)
    assert "suppress_end" in events(r)
    assert "Wait," in r.reasoning
    assert r.usage.thinking > base.usage.thinking


def test_nothink_skips_thinking(small):
    r = solve(EASY, method="nothink(max_answer=40)", backend=small)
    assert r.usage.thinking == 0 and r.reasoning == "" and r.usage.answer > 0 and r.usage.forced > 0


def test_elastic_has_separate_budgets(small):
    r = solve(WORD, method="elastic(max_thinking=24,max_solution=8)", backend=small)
    assert r.usage.thinking <= 24
    assert r.answer is not None
    b = next(e for e in r.trace if e.event == "budgets")
    assert b.detail["thinking"] == r.usage.thinking


def test_deer_exits_before_the_baseline_on_a_confident_item(small):
    base = solve(EASY, method="think", backend=small)
    r = solve(EASY, method="deer(threshold=0.9)", backend=small)
    assert r.finish_reason == "exit", [e.describe() for e in r.trace]
    ex = next(e for e in r.trace if e.event == "exit")
    assert ex.detail["confidence"] >= 0.9
    assert r.usage.thinking < base.usage.thinking
    assert r.usage.overhead >= 0 and r.answer == "42"
    probes = next(e for e in r.trace if e.event == "probes")
    assert probes.detail["n"] >= 1


def test_deer_geometric_and_unreachable_threshold(small):
    r = solve(EASY, method="deer(threshold=1.0,confidence=geometric,max_probes=2)", backend=small)
    assert r.finish_reason != "exit"  # a probability of exactly 1.0 is never reached
    probes = next(e for e in r.trace if e.event == "probes")
    assert probes.detail["n"] <= 2 and r.usage.overhead > 0  # failed probes are paid for


def test_dynasor_exits_when_probes_agree(small):
    r = solve(WORD, method="dynasor(interval=16,agree=2)", backend=small)
    assert r.finish_reason == "exit", [e.describe() for e in r.trace]
    probes = next(e for e in r.trace if e.event == "probes")
    assert probes.detail["n"] >= 2 and r.usage.overhead > 0


def test_concise_hint_injects_hints(small):
    r = solve(WORD, method="concise-hint(interval=16,max_thinking=120,max_hints=3)", backend=small)
    hints = [e for e in r.trace if e.event == "hint"]
    assert 1 <= len(hints) <= 3
    assert "concise" in r.reasoning
    assert r.usage.thinking <= 120 and r.usage.forced > 0


def test_inftythink_summarises_and_restarts(small):
    r = solve(WORD, method="inftythink(segment_tokens=32,max_segments=3,summary_tokens=40)", backend=small)
    assert "summarise" in events(r)
    assert r.usage.thinking <= 3 * 32
    assert r.usage.overhead > 0 and r.answer is not None


def test_composition_prompt_plus_decoding(small):
    r = solve(WORD, method="chain-of-draft+budget(max_thinking=20)", backend=small)
    assert r.method == "chain-of-draft+budget(max_thinking=20)"
    assert "5 words at most" in r.prompt and r.usage.thinking <= 20 and r.answer


@pytest.mark.parametrize(
    "spec",
    [
        "chain-of-draft(words_per_step=0)",
        "concise-cot(word_limit=-3)",
        "sketch-of-thought(paradigm=doodle)",
        "sketch-of-thought(router=magic)",
        "tale(min_budget=500,max_budget=100)",
        "budget(max_thinking=0)",
        "budget(min_thinking=300,max_thinking=200)",
        "nothink(max_answer=0)",
        "elastic(max_solution=-1)",
        "deer(threshold=1.5)",
        "deer(threshold=0)",
        "deer(confidence=median)",
        "dynasor(agree=1)",
        "dynasor(interval=2)",
        "concise-hint(alpha=-1)",
        "inftythink(max_segments=0)",
        "deer(thresold=0.9)",
        "chain-of-draft+chain-of-draft+deer",
        "deer+chain-of-draft",
    ],
)
def test_bad_parameters(spec):
    with pytest.raises(ConfigError):
        get_method(spec)
