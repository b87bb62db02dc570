"""Decisions and token accounting of the sampling methods, pinned on a scripted backend.

The scripted model is a Qwen3-style thinker whose reply depends only on the sampling seed
(sample i of a task with seed s draws with seed s + i), so each test chooses what every
sample answers and how long it is, and checks exactly which samples ran, when the method
stopped, what won the vote and where every token was counted. Tokens are words and
whitespace runs (tests/fakes.py): `reply(a, f)` thinks for 5 + 2f tokens (the end marker
included) and answers in 4. The real-model side of the same methods is tests/test_sampling.py.
"""

from __future__ import annotations

import math

import pytest

from leanthink import solve
from leanthink.api import resolve_method
from leanthink.backends.base import Chunk, SamplingParams
from leanthink.errors import ConfigError
from leanthink.methods import get_method
from leanthink.methods.base import Composed
from leanthink.methods.sampling import build_inner
from leanthink.result import Result

from .fakes import ScriptedBackend

QUESTION = "What is 2+3?"
NO_ANSWER = "Hmm.\n</think>\n\nNo idea."
"""A chain that ends without an answer: 3 thinking tokens, 4 answer tokens, answer None."""


def reply(answer: str, filler: int = 0) -> str:
    """A chain of 5 + 2 * filler thinking tokens, then 4 answer tokens (`\\boxed{answer}`)."""
    return "Add them" + " up" * filler + ".\n</think>\n\nSo \\boxed{" + answer + "}"


class SeededBackend(ScriptedBackend):
    """The scripted backend with one reply per sampling seed, and scripted top logprobs for a
    one-token greedy rating call (dsc's difficulty rating)."""

    def __init__(self, replies: dict[int, str], rating: dict[str, float] | None = None):
        super().__init__(lambda p: "", model_id="scripted-qwen3")
        self.replies, self.rating = replies, rating or {}
        self.requests: list[SamplingParams] = []
        """Every chain's sampling parameters, in the order the streams were opened."""
        self.rating_calls: list[SamplingParams] = []

    def stream(self, prompt: str, params: SamplingParams):
        if params.max_tokens == 1 and params.logprobs == 20:
            self.rating_calls.append(params)
            self.generated += 1
            return iter([Chunk("5", [0], math.log(0.1), dict(self.rating), "stop")])
        self.requests.append(params)
        return self._chain(prompt, params, self.replies[params.seed])

    def _chain(self, prompt: str, params: SamplingParams, text: str):
        for chunk in ScriptedBackend(lambda p: text).stream(prompt, params):
            self.generated += chunk.n_tokens
            yield chunk

    @property
    def seeds(self) -> list[int | None]:
        return [p.seed for p in self.requests]


def event(r: Result, name: str) -> dict:
    return next(e for e in r.trace if e.event == name).detail


def usage(r: Result) -> tuple[int, int, int, int]:
    return r.usage.thinking, r.usage.answer, r.usage.forced, r.usage.overhead


def assert_every_token_counted(r: Result, be: SeededBackend) -> None:
    """Each generated token is the chosen chain's thinking/answer or overhead, exactly once."""
    assert be.generated == r.usage.thinking + r.usage.answer + r.usage.overhead


# --------------------------------------------------------------------------- sc


def test_sc_votes_equivalent_answers_and_counts_the_other_samples_as_overhead():
    be = SeededBackend({10: reply("7"), 11: reply("5", 1), 12: reply("5.0", 2)})
    r = solve(QUESTION, "sc(k=3)", backend=be, seed=10)
    assert be.seeds == [10, 11, 12] and {p.temperature for p in be.requests} == {0.7}
    assert r.answer == "5" and r.samples == 3
    assert event(r, "samples") == {"answers": ["7", "5", "5.0"], "tokens": [9, 11, 13], "chosen": 1}
    assert event(r, "stop") == {"samples": 3, "why": "fixed k=3", "votes": {"5": 2, "7": 1}}
    # the chosen chain (sample 1: 7 thinking + 4 answer); samples 0 and 2 (9 + 13) are overhead
    assert usage(r) == (7, 4, 0, 22)
    assert_every_token_counted(r, be)


def test_sc_tie_goes_to_the_answer_seen_first():
    be = SeededBackend({0: reply("7", 1), 1: reply("5"), 2: reply("5"), 3: reply("7")})
    r = solve(QUESTION, "sc(k=4)", backend=be)
    assert r.answer == "7" and event(r, "samples")["chosen"] == 0
    assert event(r, "stop")["votes"] == {"7": 2, "5": 2}
    assert usage(r) == (7, 4, 0, 27)


def test_sc_sample_without_answer_is_no_vote_but_its_tokens_count():
    be = SeededBackend({0: NO_ANSWER, 1: reply("4")})
    r = solve(QUESTION, "sc(k=2)", backend=be)
    assert r.answer == "4" and event(r, "samples")["chosen"] == 1
    assert event(r, "stop")["votes"] == {"4": 1, "(none)": 1}
    assert usage(r) == (5, 4, 0, 7)
    assert_every_token_counted(r, be)


# --------------------------------------------------------------------------- esc


def test_esc_stops_at_the_first_unanimous_window():
    replies = {0: reply("5"), 1: reply("7"), 2: reply("5", 1), 3: reply("5.0")} | {i: reply("9") for i in range(4, 8)}
    be = SeededBackend(replies)
    r = solve(QUESTION, "esc(k=8,window=2)", backend=be)
    assert be.seeds == [0, 1, 2, 3]  # window (0, 1) split, window (2, 3) agrees: samples 4-7 never ran
    assert r.answer == "5" and r.samples == 4 and event(r, "samples")["chosen"] == 0
    assert event(r, "stop") == {"samples": 4, "why": "window 2 unanimous: stopped after 4 samples", "windows": 2,
                                "early": True, "votes": {"5": 3, "7": 1}}
    assert usage(r) == (5, 4, 0, 9 + 11 + 9)
    assert_every_token_counted(r, be)


def test_esc_without_a_unanimous_window_reaches_k():
    # window (2, 3) has one answer and one chain without an answer: not unanimous; the last
    # window (4) is short, so it is not a unanimous window either
    be = SeededBackend({0: reply("5"), 1: reply("7"), 2: reply("5"), 3: NO_ANSWER, 4: reply("5")})
    r = solve(QUESTION, "esc(k=5,window=2)", backend=be)
    assert be.seeds == [0, 1, 2, 3, 4] and r.answer == "5"
    assert event(r, "stop") == {"samples": 5, "why": "no unanimous window in 3: reached k=5", "windows": 3,
                                "early": False, "votes": {"5": 3, "7": 1, "(none)": 1}}
    assert usage(r) == (5, 4, 0, 9 + 9 + 7 + 9)
    assert_every_token_counted(r, be)


# --------------------------------------------------------------------------- dsc


def test_dsc_agreeing_pre_sample_is_the_whole_vote():
    be = SeededBackend({0: reply("5"), 1: reply("5.0", 1)} | {i: reply("9") for i in range(2, 6)})
    r = solve(QUESTION, "dsc(k=6)", backend=be)
    assert be.seeds == [0, 1] and r.answer == "5"
    assert event(r, "difficulty") == {"method": "agreement", "pre_answers": ["5", "5.0"], "disagreement": 0.0,
                                      "allocated": 2}
    assert event(r, "stop") == {"samples": 2, "why": "difficulty (agreement) allocated 2 of k=6 samples",
                                "early": True, "votes": {"5": 2}}
    assert usage(r) == (5, 4, 0, 11)
    assert_every_token_counted(r, be)


def test_dsc_disagreement_allocates_more_samples():
    # pre-sample of 3: two agree, so disagreement (3 - 2) / (3 - 1) = 0.5 -> 3 + ceil(0.5 * 5) = 6 of k=8
    replies = {0: reply("7"), 1: reply("5"), 2: reply("5", 1), 3: reply("5"), 4: reply("7"), 5: reply("9")}
    be = SeededBackend(replies | {6: reply("1"), 7: reply("1")})
    r = solve(QUESTION, "dsc(k=8,pre=3)", backend=be)
    assert be.seeds == [0, 1, 2, 3, 4, 5] and r.samples == 6
    assert event(r, "difficulty") == {"method": "agreement", "pre_answers": ["7", "5", "5"], "disagreement": 0.5,
                                      "allocated": 6}
    assert r.answer == "5" and event(r, "samples")["chosen"] == 1
    assert event(r, "stop")["votes"] == {"5": 3, "7": 2, "9": 1} and event(r, "stop")["early"] is True
    assert usage(r) == (5, 4, 0, 9 + 11 + 9 + 9 + 9)
    assert_every_token_counted(r, be)


def test_dsc_rating_reads_the_digit_probabilities_and_pays_for_the_rating_token():
    # P(3) = 0.2, P(7) = 0.5, "x" is no digit: rating (3 * 0.2 + 7 * 0.5) / 0.7 = 5.857
    # -> round(1 + 5 * 4.857 / 8) = 4 of k=6 samples
    top = {"3": math.log(0.2), " 7": math.log(0.5), "x": math.log(0.1)}
    be = SeededBackend({i: reply("5") for i in range(6)}, rating=top)
    r = solve(QUESTION, "dsc(k=6,difficulty=rating)", backend=be)
    (call,) = be.rating_calls
    assert call.temperature == 0.0 and call.max_tokens == 1
    assert be.seeds == [0, 1, 2, 3]
    assert event(r, "difficulty") == {"method": "rating", "rating": 5.86, "allocated": 4}
    assert usage(r) == (5, 4, 0, 3 * 9 + 1)  # three other samples and the rating token
    assert_every_token_counted(r, be)


def test_dsc_rating_without_a_digit_assumes_the_hardest():
    be = SeededBackend({i: reply("5") for i in range(4)}, rating={"x": 0.0})
    r = solve(QUESTION, "dsc(k=4,difficulty=rating)", backend=be)
    assert be.seeds == [0, 1, 2, 3] and event(r, "difficulty")["rating"] == 9.0


# --------------------------------------------------------------------------- adaptive-sc


def test_adaptive_sc_stops_when_the_beta_criterion_is_met():
    # unanimous n: P(settled) = 1 - 1/2^(n+1); 0.96875 >= 0.95 at n = 4
    be = SeededBackend({i: reply("5") for i in range(8)})
    r = solve(QUESTION, "adaptive-sc(k=8)", backend=be)
    assert be.seeds == [0, 1, 2, 3]
    stop = event(r, "stop")
    assert stop["history"] == [0.75, 0.875, 0.9375, 0.9688] and stop["early"] is True
    assert usage(r) == (5, 4, 0, 27)


# --------------------------------------------------------------------------- the method a budget applies to


def test_budget_target_of_a_plain_method_is_itself():
    m = get_method("deer")
    assert m.budget_target() is m
    m64 = m.with_budget(64)
    assert type(m64) is type(m) and m64.params.max_thinking == 64 and m.params.max_thinking != 64
    assert get_method("think(max_answer=7)").with_budget(9).spec == "think(max_thinking=9,max_answer=7)"
    with pytest.raises(ConfigError, match="no token budget"):
        get_method("direct").with_budget(10)


def test_budget_target_of_a_composition_is_its_second_method():
    m = get_method("chain-of-draft+deer")
    assert isinstance(m, Composed) and m.budget_target() is m.second
    m64 = m.with_budget(64)
    assert isinstance(m64, Composed) and m64.first is m.first
    assert m64.second.params.max_thinking == 64 and m64.spec == "chain-of-draft+deer(max_thinking=64)"
    capped = get_method("chain-of-draft+think").with_target_params(max_answer=30)
    assert capped.spec == "chain-of-draft+think(max_answer=30)"


def test_a_budget_the_spec_set_wins_when_asked():
    assert get_method("budget(max_thinking=9)").with_budget(50, keep_explicit=True).params.max_thinking == 9
    assert get_method("think").with_budget(50, keep_explicit=True).params.max_thinking == 50
    assert build_inner("chain-of-draft+deer", 77).budget_target().params.max_thinking == 77
    assert build_inner("budget(max_thinking=9)", 77).params.max_thinking == 9


def test_every_site_uses_the_budget_target():
    from leanthink.server.planning import Plan, apply_cap

    assert resolve_method("chain-of-draft+deer", 64).spec == "chain-of-draft+deer(max_thinking=64)"
    assert resolve_method("sc(k=2)", 32).inner.params.max_thinking == 32
    capped = apply_cap(get_method("chain-of-draft+think"), 100, reserve=48)
    assert capped.spec == "chain-of-draft+think(max_thinking=52,max_answer=100)"
    assert capped.budget_target().budget_param == "max_thinking"

    def live(spec: str) -> bool:
        return Plan(endpoint="chat", model_name="m", method=get_method(spec), method_label="x", method_spec=spec,
                    source="body").live

    assert live("chain-of-draft+deer") and not live("chain-of-draft+sc(k=2)") and not live("sc(k=2)")
