"""Thinking-control methods.

The scripted tests pin, on one scripted chain, each method's decisions and token accounting:
where probes ran, when the exit fired, the tokens of each phase and the trace. The tests on a
real model (Qwen2.5-Coder-0.5B; slow) check that each mechanism fires on real text.
"""

import pytest

from leanthink import solve
from leanthink.errors import ConfigError
from leanthink.methods import get_method
from leanthink.methods.prompting import route_by_rules

from .fakes import Script, ScriptedBackend, generated

EASY = "What is 12 + 30?"
WORD = "A robe takes 2 bolts of blue fiber and half that much white fiber. How many bolts in total does it take?"


def events(r):
    return [e.event for e in r.trace]


# --------------------------------------------------------------------------- scripted chain
# Tokens are words and whitespace runs. CHAIN's thinking is 29 tokens (the closing `</think>`
# included); its answer is 8. The paragraph breaks end tokens 8 and 24; "Wait" is token 15.
# A probe (or forced answer) injects FORCE_END (8 tokens) and reads "4}" (1 token): 9 tokens.

CHAIN = "Add 2 and 2.\n\nThat makes 4. Wait no, 4 is right.\n\nSo 4.\n</think>\n\nThe answer is \\boxed{4}."
FORCE_END = "\n</think>\n\n**Final Answer**\n\\boxed{"
Q = "What is 2 plus 2?"


def sure_after_right(prompt, i, tok):
    """Probes are confident (p=0.99) once the reasoning says "right", unsure (p=0.37) before."""
    return -0.01 if "right" in prompt else -1.0


def scripted(**script):
    s = Script(CHAIN, **script)
    return s, ScriptedBackend(s, model_id="scripted-qwen3", logprob=sure_after_right)


def cuts(s):
    """The reasoning prefix each probe branched from."""
    return [generated(p).removesuffix(FORCE_END) for p in s.probes]


def usage(r):
    u = r.usage
    return {"thinking": u.thinking, "answer": u.answer, "forced": u.forced, "overhead": u.overhead}


def test_scripted_think_is_the_reference():
    s, be = scripted()
    r = solve(Q, "think", backend=be)
    assert usage(r) == {"thinking": 29, "answer": 8, "forced": 0, "overhead": 0}
    assert r.finish_reason == "stop" and r.answer == "4" and s.probes == []
    assert be.count_tokens(FORCE_END) == 8


def test_deer_probes_at_each_cue_and_exits_on_the_first_confident_probe():
    s, be = scripted()
    r = solve(Q, "deer", backend=be)
    # probes at the two paragraph breaks and before "Wait"; only the third is confident
    assert cuts(s) == ["Add 2 and 2.", "Add 2 and 2.\n\nThat makes 4.", "Add 2 and 2.\n\nThat makes 4. Wait no, 4 is right."]
    # the chain was paused before each probe and resumed from the text so far (never after the exit)
    resumes = [generated(c) for c in be.calls[1:] if not c.endswith("{")]
    assert resumes == ["Add 2 and 2.\n\n", "Add 2 and 2.\n\nThat makes 4. Wait"]
    assert r.finish_reason == "exit" and r.answer == "4"
    assert r.reasoning == "Add 2 and 2.\n\nThat makes 4. Wait no, 4 is right."  # cut at the probe
    assert r.answer_text == "**Final Answer**\n\\boxed{4}"  # the deciding probe is the answer
    # two failed probes are overhead; the deciding one moves to forced (8) + answer (1)
    assert usage(r) == {"thinking": 24, "answer": 1, "forced": 8, "overhead": 18}
    assert [(e.event, e.at_token, e.detail) for e in r.trace] == [
        ("exit", 24, {"reason": "exit", "confidence": 0.99, "probes": 3, "answer": "4"}),
        ("probes", None, {"n": 3, "overhead_tokens": 18, "exited": True}),
    ]


def test_deer_geometric_confidence_decides_the_same_way():
    s, be = scripted()
    r = solve(Q, "deer(confidence=geometric,threshold=0.99)", backend=be)
    assert r.finish_reason == "exit" and len(s.probes) == 3 and usage(r)["thinking"] == 24


def test_deer_with_exit_off_keeps_the_think_chain_and_pays_every_probe():
    s, be = scripted()
    r = solve(Q, "deer(threshold=1.01)", backend=be)
    assert len(s.probes) == 3 and r.finish_reason == "stop" and r.answer_text == "The answer is \\boxed{4}."
    assert usage(r) == {"thinking": 29, "answer": 8, "forced": 0, "overhead": 27}
    assert events(r) == ["probes"]


@pytest.mark.parametrize("params,expected", [
    ("max_probes=2", ["Add 2 and 2.", "Add 2 and 2.\n\nThat makes 4."]),
    ("min_tokens=10", ["Add 2 and 2.\n\nThat makes 4.", "Add 2 and 2.\n\nThat makes 4. Wait no, 4 is right."]),
    ("cues=Wait", ["Add 2 and 2.\n\nThat makes 4."]),
])
def test_deer_probe_limits_and_cues(params, expected):
    s, be = scripted()
    r = solve(Q, f"deer(threshold=1.01,{params})", backend=be)
    assert cuts(s) == expected
    assert r.usage.overhead == 9 * len(expected) and r.usage.thinking == 29


def test_dynasor_probes_every_interval_and_exits_when_the_last_answers_agree():
    # the first probe (4 tokens in) answers 5; then 4, 4: two agree at the third probe
    s, be = scripted(probe=lambda p: "5}" if generated(p).count(" ") < 4 else "4}")
    r = solve(Q, "dynasor(interval=4,agree=2)", backend=be)
    assert cuts(s) == ["Add 2", "Add 2 and 2.", "Add 2 and 2.\n\nThat makes"]
    assert r.finish_reason == "exit" and r.answer == "4" and r.reasoning == "Add 2 and 2.\n\nThat makes"
    assert usage(r) == {"thinking": 12, "answer": 1, "forced": 8, "overhead": 18}
    assert [(e.event, e.at_token, e.detail) for e in r.trace] == [
        ("exit", 12, {"reason": "exit", "probes": 3, "answer": "4", "agreeing": 2}),
        ("probes", None, {"n": 3, "overhead_tokens": 18, "exited": True}),
    ]


def test_dynasor_never_exits_on_hedging_probes():
    s, be = scripted(probe="maybe 4}")  # 3 tokens: every probe costs 11
    r = solve(Q, "dynasor(interval=4,agree=2)", backend=be)
    assert len(s.probes) == 7  # at thinking tokens 4, 8, ..., 28
    assert r.finish_reason == "stop" and r.answer_text == "The answer is \\boxed{4}."
    assert usage(r) == {"thinking": 29, "answer": 8, "forced": 0, "overhead": 77}


def test_budget_cap_cuts_and_forces_the_answer():
    s, be = scripted()
    r = solve(Q, "budget(max_thinking=10)", backend=be)
    assert cuts(s) == ["Add 2 and 2.\n\nThat"]  # the forced answer branches at the cap
    assert r.finish_reason == "budget" and r.answer == "4"
    assert usage(r) == {"thinking": 10, "answer": 1, "forced": 8, "overhead": 0}
    assert [(e.event, e.at_token, e.detail) for e in r.trace] == [
        ("force_answer", 10, {"reason": "budget"}),
        ("budget", None, {"cap": 10, "fired": True, "thinking": 10}),
    ]


def test_budget_min_thinking_suppresses_the_end_and_pays_the_discarded_answers():
    s, be = scripted(ignore=("\nWait,",))  # after "Wait," the model closes again: 2 more tokens
    r = solve(Q, "budget(min_thinking=32,max_thinking=60,max_waits=2)", backend=be)
    assert r.reasoning.endswith("So 4.\nWait,\nWait,") and r.finish_reason == "stop"
    # two "\nWait," (2 tokens each) forced; two discarded 8-token answers are overhead
    assert usage(r) == {"thinking": 33, "answer": 8, "forced": 4, "overhead": 16}
    assert [(e.event, e.at_token) for e in r.trace if e.event == "suppress_end"] == [("suppress_end", 29), ("suppress_end", 31)]


def test_concise_hint_injects_at_adaptive_intervals():
    hint = " (I should be concise and get to the answer.) "  # 19 tokens
    s, be = scripted(ignore=(hint,))
    r = solve(Q, "concise-hint(interval=6,max_hints=2,alpha=0)", backend=be)
    assert r.reasoning.count(hint.strip()) == 2 and r.reasoning.startswith("Add 2 and " + hint)
    assert usage(r) == {"thinking": 29, "answer": 8, "forced": 38, "overhead": 0}
    assert [(e.event, e.at_token, e.detail) for e in r.trace] == [("hint", 6, {"n": 1}), ("hint", 12, {"n": 2})]
    # each injection restarts the stream after the hint
    assert [generated(c).endswith(hint) for c in be.calls] == [False, True, True]


# --------------------------------------------------------------------------- real model

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


def test_budget_cap_fires_and_always_answers(small):
    r = solve(WORD, method="budget(max_thinking=8)", backend=small)
    assert r.finish_reason == "budget" and r.usage.thinking == 8 and r.usage.forced > 0
    assert r.answer not in (None, "")
    assert next(e for e in r.trace if e.event == "budget").detail == {"cap": 8, "fired": True, "thinking": 8}


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
    assert r.answer == "42" and r.usage.forced > 0 and r.usage.answer > 0  # the deciding probe is the answer
    probes = next(e for e in r.trace if e.event == "probes")
    assert probes.detail["n"] == ex.detail["probes"] >= 1 and probes.detail["overhead_tokens"] == r.usage.overhead


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
