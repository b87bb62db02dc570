"""Baselines end to end on real models, including stop-and-continue (cut thinking, force the answer)."""

from leanthink import solve
from leanthink.grading import is_equivalent

Q = "Janet has 3 apples. She buys 5 more apples and then gives 2 apples to her friend. How many apples does Janet have now?"


def test_think_answers_gsm8k_style_question(small):
    r = solve(Q, method="think", backend=small)
    assert is_equivalent(r.answer, "6"), (r.answer, r.reasoning, r.answer_text)
    assert r.emulated_thinking and r.usage.thinking > 10 and r.reasoning
    assert r.usage.total == r.usage.thinking + r.usage.answer + r.usage.forced + r.usage.overhead
    assert r.latency_s > 0


def test_direct_answers_without_thinking(small):
    r = solve("What is 12 + 30?", method="direct", backend=small)
    assert r.answer == "42" and r.usage.thinking == 0 and r.usage.forced > 0


def test_cut_thinking_at_n_tokens_then_force_answer(small):
    """Stream, stop after 24 thinking tokens, continue from the prefix with the forced answer."""
    r = solve(Q, method="think", budget=24, backend=small)
    assert r.finish_reason == "budget"
    assert r.usage.thinking == 24
    assert r.answer is not None and r.answer != ""
    assert r.answer_text.startswith("**Final Answer**")
    assert r.trace[0].event == "force_answer" and r.trace[0].at_token == 24
    assert r.usage.forced == small.count_tokens("\n\n**Final Answer**\n\\boxed{")


def test_tiny_model_plumbing(tiny):
    r = solve("What is 2+2?", method="think(max_thinking=30,max_answer=30)", backend=tiny)
    assert r.usage.thinking <= 30 and r.usage.answer <= 40 + 30
    assert r.model == "smollm2-135m" and r.backend == "llama.cpp"
