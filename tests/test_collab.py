"""Collaboration methods.

Scripted tests pin each method's decisions and token accounting (which path answered, which
steps were accepted, the tokens of each model). Tests on real models (slow) check that the
mechanisms fire: route and spec-reason on llama.cpp (Qwen2.5-Coder-0.5B as the task's "large"
model, SmolLM2-135M as the small one), probe-exit on the transformers backend (SmolLM2-135M
GGUF read by transformers).
"""

from __future__ import annotations

import json
import math

import pytest

from leanthink import solve
from leanthink.backends.base import Capabilities
from leanthink.errors import CapabilityError, ConfigError
from leanthink.loading import RegisteredLoader
from leanthink.methods import Task, get_method

from .fakes import Script, ScriptedBackend, generated

EASY = "What is 2+3?"
HARD = "What is 3847 * 2963?"


def event(r, name):
    return next(e for e in r.trace if e.event == name)


def events(r):
    return [e.event for e in r.trace]


def usage(r):
    u = r.usage
    return {"thinking": u.thinking, "answer": u.answer, "forced": u.forced, "overhead": u.overhead}


# --------------------------------------------------------------------------- scripted
# Tokens are words and whitespace runs. A boxed answer read after FORCE_END (8 tokens on the
# qwen3 family; the qwen2.5 family injects only "**Final Answer**\n\\boxed{", 5 tokens) is
# "4}" or "11}": 1 token.

CHAIN = "Add 2 and 2.\n\nThat makes 4.\n\nSo 4.\n</think>\n\nThe answer is \\boxed{4}."
Q = "What is 2 plus 2?"


def large_model():
    """The task's model: sure (p=0.9) of its fast answer to Q, unsure (p=0.5) of anything else."""
    script = Script(CHAIN, probe=lambda p: "4}" if Q in p else "11}")
    return ScriptedBackend(script, model_id="scripted-qwen3", logprob=lambda p, i, t: math.log(0.9 if Q in p else 0.5))


def test_route_keeps_a_confident_fast_answer():
    be = large_model()
    r = solve(Q, "route(small_model=none,max_thinking=8)", backend=be)
    ev = event(r, "route")
    assert ev.detail == {"escalated": False, "signal": "prob", "confidence": 0.9, "threshold": 0.8,
                         "fast_model": "scripted-qwen3", "fast_answers": ["4"], "fast_tokens": 10}
    assert len(be.calls) == 1 and be.calls[0].endswith("<think>\n\n</think>\n\n**Final Answer**\n\\boxed{")
    assert r.answer == "4" and r.samples == 1 and r.finish_reason == "stop"
    assert usage(r) == {"thinking": 0, "answer": 1, "forced": 9, "overhead": 0}  # the empty thinking block is forced


def test_route_escalates_an_unsure_fast_answer_and_pays_for_both():
    be = large_model()
    r = solve("What is 3847 * 2963?", "route(small_model=none,max_thinking=8)", backend=be)
    ev = event(r, "route")
    assert ev.detail["escalated"] is True and ev.detail["confidence"] == 0.5 and ev.detail["fast_tokens"] == 10
    assert ev.detail["slow_model"] == "scripted-qwen3"
    # the slow path is think(max_thinking=8): cut at 8 tokens, answer forced
    assert events(r) == ["route", "force_answer"] and r.finish_reason == "budget" and r.samples == 2
    assert usage(r) == {"thinking": 8, "answer": 1, "forced": 8, "overhead": 10}


@pytest.mark.parametrize("threshold,escalated", [(0.8, True), (0.6, False)])
def test_route_agreement_of_small_model_samples(threshold, escalated):
    answers = iter(["4}", "5}", "4}"])
    small = ScriptedBackend(Script(CHAIN, probe=lambda p: next(answers)), model_id="scripted-qwen2.5")
    be = large_model()
    r = solve(Q, f"route(signal=agreement,threshold={threshold},max_thinking=8)", backend=be,
              models=RegisteredLoader(models={"small": small}))
    ev = event(r, "route")
    assert len(small.calls) == 3 and ev.detail["fast_model"] == "scripted-qwen2.5"
    assert ev.detail["fast_answers"] == ["4", "5", "4"] and ev.detail["confidence"] == 0.6667
    assert ev.detail["escalated"] is escalated and ev.detail["fast_tokens"] == 18  # 3 x (5 forced + 1)
    if escalated:  # think(max_thinking=8) on the large model; the three fast samples are overhead
        assert r.samples == 4 and len(be.calls) == 2
        assert usage(r) == {"thinking": 8, "answer": 1, "forced": 8, "overhead": 18}
    else:  # the first sample of the majority answers; the other two are overhead
        assert r.samples == 3 and be.calls == [] and r.answer == "4"
        assert usage(r) == {"thinking": 0, "answer": 1, "forced": 5, "overhead": 12}


SMALL_STEPS = ["Add 2 and 2.\n\n", "That makes 5.\n\n", "So 4.\n</think>\n\n\\boxed{4}"]


def small_steps(prompt):
    """The small model proposes step k after k paragraphs, whatever they say."""
    done = generated(prompt)
    return SMALL_STEPS[done.count("\n\n")]


def judge(prompt, i, tok):
    """The large model's rating token: mostly 2 for a step that says 5 (score 2.6), else mostly 8 (7.4)."""
    step = prompt.split("Proposed next step:\n", 1)[1].split("\n", 1)[0]
    low, high = ("8", "2") if "5" in step else ("2", "8")
    return {high: math.log(0.9), low: math.log(0.1)}


def spec_models():
    large = ScriptedBackend(Script(CHAIN, rules=(("Rating: ", "8"),)), model_id="scripted-qwen3", top_logprobs=judge)
    small = ScriptedBackend(small_steps, model_id="scripted-qwen3")
    return large, small, RegisteredLoader(models={"small": small})


def test_spec_reason_accepts_good_steps_and_rewrites_a_bad_one():
    large, small, models = spec_models()
    r = solve(Q, "spec-reason", backend=large, models=models)
    d = event(r, "spec_reason").detail
    assert d["scores"] == [7.4, 2.6, 7.4] and d["judged"] == d["proposed"] == 3
    assert d["accepted"] == 2 and d["acceptance_rate"] == 0.6667
    # small: 8 + 6 (rejected) + 5 tokens; large: 3 ratings + the rewritten step (6) + the answer (1)
    assert (d["small_tokens"], d["large_tokens"], d["judge_tokens"], d["rejected_tokens"]) == (19, 10, 3, 6)
    assert r.reasoning == "Add 2 and 2.\n\nThat makes 4.\n\nSo 4."  # the large model's step 2
    assert r.answer == "4" and r.finish_reason == "stop"
    # thinking: accepted + rewritten steps; overhead: ratings + the rejected proposal
    assert usage(r) == {"thinking": 19, "answer": 1, "forced": 8, "overhead": 9}
    assert [generated(c) for c in small.calls] == ["", "Add 2 and 2.\n\n", "Add 2 and 2.\n\nThat makes 4.\n\n"]


def test_spec_reason_threshold_zero_accepts_every_step():
    large, small, models = spec_models()
    r = solve(Q, "spec-reason(threshold=0)", backend=large, models=models)
    d = event(r, "spec_reason").detail
    assert d["judged"] == d["accepted"] == 3 and d["acceptance_rate"] == 1.0 and d["rejected_tokens"] == 0
    assert r.reasoning == "Add 2 and 2.\n\nThat makes 5.\n\nSo 4."
    assert usage(r) == {"thinking": 19, "answer": 1, "forced": 8, "overhead": 3}


def test_spec_reason_stops_at_its_thinking_budget():
    large, small, models = spec_models()
    r = solve(Q, "spec-reason(max_thinking=6)", backend=large, models=models)
    d = event(r, "spec_reason").detail
    assert d["proposed"] == 1 and d["small_tokens"] == 6  # the step is capped at the budget
    assert r.finish_reason == "budget" and r.reasoning == "Add 2 and"
    assert usage(r) == {"thinking": 6, "answer": 1, "forced": 8, "overhead": 1}


class _Probe:
    """A probe that reads P(correct) off the first feature of the hidden state."""

    dim, step_delimiter, model_id = 3, "\n\n", "scripted-qwen3"

    def predict(self, h):
        return h[0]

    def seen(self, question):
        return False


@pytest.mark.parametrize("threshold,exited", [(0.9, True), (0.99, False)])
def test_probe_exit_checks_each_step_end_and_exits_when_sure(threshold, exited):
    """The hidden state says 0.95 once the reasoning says "makes 4.", 0.2 before."""
    script = Script(CHAIN)
    be = ScriptedBackend(script, model_id="scripted-qwen3", caps=Capabilities(hidden_states=True))
    checked = []
    be.hidden_states_for = lambda text: checked.append(generated(text)) or [[0.95 if "makes 4." in text else 0.2, 0, 0]]
    r = solve(Q, f"probe-exit(probe=p,threshold={threshold})", backend=be, models=RegisteredLoader(probes={"p": _Probe()}))
    assert checked == ["Add 2 and 2.\n\n", "Add 2 and 2.\n\nThat makes 4.\n\n"]  # at each step end
    ev = event(r, "probe_checks")
    assert ev.detail["n"] == 2 and ev.detail["probs"] == [0.2, 0.95] and ev.detail["exited"] is exited
    if exited:  # the answer is forced after the step end (the probe gives no answer)
        assert event(r, "force_answer").detail == {"reason": "exit", "probe_prob": 0.95, "checks": 2}
        assert r.finish_reason == "exit" and r.reasoning == "Add 2 and 2.\n\nThat makes 4."
        assert usage(r) == {"thinking": 14, "answer": 1, "forced": 8, "overhead": 0}
    else:
        assert r.finish_reason == "stop" and usage(r) == {"thinking": 19, "answer": 8, "forced": 0, "overhead": 0}


# --------------------------------------------------------------------------- real models

# --------------------------------------------------------------------------- route


def test_route_escalates_only_when_the_fast_answer_is_unsure(small):
    easy = solve(EASY, method="route(small_model=none,max_thinking=8)", backend=small)
    ev = event(easy, "route")
    assert ev.detail["escalated"] is False and ev.detail["confidence"] >= 0.8
    assert easy.answer == "5" and easy.usage.thinking == 0 and easy.samples == 1
    assert easy.usage.total == ev.detail["fast_tokens"]

    hard = solve(HARD, method="route(small_model=none,max_thinking=8)", backend=small)
    ev = event(hard, "route")
    assert ev.detail["escalated"] is True and ev.detail["confidence"] < 0.8
    assert hard.samples == 2 and 0 < hard.usage.thinking <= 8  # the escalation thought
    assert hard.usage.overhead >= ev.detail["fast_tokens"]  # the fast try is paid for
    assert any(e.event == "force_answer" for e in hard.trace)  # the slow path's own trace


def test_route_agreement_signal_with_a_small_model(small, tiny):
    # threshold=1: any disagreement between the two fast samples escalates
    r = solve(HARD, method="route(small_model=smollm2-135m,signal=agreement,n_fast=2,threshold=1,max_thinking=8)",
              backend=small)
    ev = event(r, "route")
    answers = ev.detail["fast_answers"]
    assert ev.detail["fast_model"] == tiny.model_id  # the second model answered first
    assert len(answers) == 2 and ev.detail["signal"] == "agreement" and ev.detail["fast_tokens"] > 0
    agree = answers[0] is not None and answers[0] == answers[1]
    assert ev.detail["confidence"] == (1.0 if agree else 0.5 if any(a is not None for a in answers) else 0.0)
    assert ev.detail["escalated"] is (not agree)
    assert r.samples == 2 + (not agree)
    if agree:  # the fast answer stands: its tokens are all there is
        assert r.usage.total == ev.detail["fast_tokens"] and r.usage.thinking == 0
    else:  # the large model thought; the fast samples are overhead
        assert ev.detail["slow_model"] == small.model_id
        assert 0 < r.usage.thinking <= 8 and r.usage.overhead >= ev.detail["fast_tokens"]


# --------------------------------------------------------------------------- spec-reason


def test_spec_reason_uses_both_models_and_reports_acceptance(small, tiny):
    r = solve(EASY, method="spec-reason(small_model=smollm2-135m,max_steps=2,max_step_tokens=10,max_thinking=20)",
              backend=small)
    ev = event(r, "spec_reason")
    d = ev.detail
    assert d["small_model"] == tiny.model_id and d["large_model"] == small.model_id
    assert d["proposed"] >= 1 and d["small_tokens"] > 0 and d["large_tokens"] > 0
    assert d["judged"] >= 1 and d["judged"] == len(d["scores"]) and all(0 <= s <= 9 for s in d["scores"])
    assert d["acceptance_rate"] == pytest.approx(d["accepted"] / d["judged"], abs=1e-3)
    assert d["judge_tokens"] == d["judged"]  # one judgment token per step, read from the top logprobs
    # judge tokens and rejected proposals are overhead; the large model answers
    assert r.usage.overhead >= d["judge_tokens"] + d["rejected_tokens"]
    assert r.usage.thinking <= 20 and r.answer is not None


# --------------------------------------------------------------------------- probe-exit


@pytest.fixture(scope="module")
def hs_backend():
    for mod in ("torch", "transformers", "gguf"):
        pytest.importorskip(mod)
    from leanthink.backends.transformers_backend import TransformersBackend

    from .conftest import smollm_path

    b = TransformersBackend(smollm_path(), threads=1)
    yield b
    b.close()


@pytest.fixture(scope="module")
def probe_file(hs_backend, tmp_path_factory):
    """Trained through the CLI command on a few synthetic items (some with a wrong gold
    answer, so both labels can occur)."""
    import typer
    from typer.testing import CliRunner

    from leanthink import api
    from leanthink.probes import probe_train_command

    d = tmp_path_factory.mktemp("probe")
    data = d / "items.jsonl"
    rows = [("What is 2+3?", "5"), ("What is 10-4?", "6"), ("What is 2+3?", "7")]
    data.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in rows))
    model = f"hf:{hs_backend.model_id}"
    api._BACKENDS[model] = hs_backend  # reuse the loaded model
    app = typer.Typer()
    app.command("train")(probe_train_command)
    app.command("noop")(lambda: None)  # two commands: `train` stays a subcommand, as under `leanthink probe`
    out = d / "probe.json"
    res = CliRunner().invoke(app, ["train", "--model", model, "--dataset", f"jsonl:{data}", "--n-items", "3",
                                   "--offset", "0", "--max-thinking", "24", "--max-points", "2", "--step", "line",
                                   "--out", str(out)])
    api._BACKENDS.pop(model, None)
    assert res.exit_code == 0, res.output
    assert "probe written" in res.output
    return out


def test_probe_file_is_documented_and_loads(probe_file, hs_backend):
    from leanthink.probes import FORMAT, load_probe

    d = json.loads(probe_file.read_text())
    assert d["format"] == FORMAT and d["model_id"] == hs_backend.model_id and d["layer"] == -1
    assert d["hidden_size"] == hs_backend.hidden_size == len(d["weights"]) == len(d["mean"]) == len(d["std"])
    assert d["step_delimiter"] == "\n"
    t = d["training"]
    assert t["n_points"] > 0 and len(t["items"]) + len(t["heldout_items"]) == 3 and len(t["heldout_items"]) == 1
    assert set(d["metrics"]) >= {"heldout_auc", "heldout_accuracy", "train_auc", "train_accuracy"}
    p = load_probe(probe_file)
    assert p.dim == hs_backend.hidden_size and 0 <= p.predict(p.mean) <= 1
    assert p.seen("What is 2+3?") and not p.seen("What is 4+4?")


def _variant(path, tmp_path, bias):
    d = json.loads(path.read_text())
    d["weights"] = [0.0] * len(d["weights"])
    d["bias"] = bias
    out = tmp_path / f"probe_{bias}.json"
    out.write_text(json.dumps(d))
    return out


def test_probe_exit_runs_the_trained_probe_and_exits_when_confident(probe_file, hs_backend, tmp_path):
    r = solve("What is 4+4?", method=f"probe-exit(probe={probe_file},threshold=0.5,max_thinking=32)", backend=hs_backend)
    ev = event(r, "probe_checks")
    assert ev.detail["n"] >= 1 and all(0 <= x <= 1 for x in ev.detail["probs"])
    assert ev.detail["exited"] == any(x >= 0.5 for x in ev.detail["probs"])
    assert ev.detail["model_match"] and not ev.detail["seen_in_training"]

    # a probe that is always sure exits at the first step end; one that never is does not
    sure = solve("What is 4+4?", method=f"probe-exit(probe={_variant(probe_file, tmp_path, 40.0)},max_thinking=32)",
                 backend=hs_backend)
    ev = event(sure, "probe_checks")
    assert sure.finish_reason == "exit" and ev.detail["n"] == 1 and sure.answer is not None
    assert event(sure, "force_answer").detail["reason"] == "exit"
    never = solve("What is 4+4?", method=f"probe-exit(probe={_variant(probe_file, tmp_path, -40.0)},max_thinking=32)",
                  backend=hs_backend)
    assert never.finish_reason != "exit" and event(never, "probe_checks").detail["n"] >= 1
    assert sure.usage.thinking <= never.usage.thinking


def test_probe_exit_needs_hidden_states(small, probe_file):
    with pytest.raises(CapabilityError):
        get_method(f"probe-exit(probe={probe_file})")(Task.create(EASY, small))


def test_train_probe_rejects_bad_input(hs_backend, probe_file, tmp_path):
    from leanthink.probes import train_probe

    with pytest.raises(ConfigError):
        train_probe(hs_backend, [("q", "1")], 1, tmp_path / "p.json", holdout=1.5)
    with pytest.raises(ConfigError):
        train_probe(hs_backend, [("q", "1")], 0, tmp_path / "p.json")
    with pytest.raises(ConfigError):
        get_method(f"probe-exit(probe={probe_file},threshold=0)")
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "something-else"}')
    m = get_method(f"probe-exit(probe={bad})")  # parameters are checked without reading files
    with pytest.raises(ConfigError, match="not a leanthink probe file"):
        m(Task.create(EASY, hs_backend))  # the file is read when the method runs


@pytest.mark.parametrize(
    "spec",
    [
        "route(signal=vibes)",
        "route(threshold=0)",
        "route(threshold=1.5)",
        "route(n_fast=1)",
        "route(fast_temperature=0)",
        "route(fast_thinking=-1)",
        "route(slow=sc)",
        "route(slow=nosuch)",
        "route(max_thinking=0)",
        "spec-reason(small_model=none)",
        "spec-reason(threshold=10)",
        "spec-reason(step=sentence)",
        "spec-reason(max_step_tokens=2)",
        "spec-reason(max_steps=0)",
        "probe-exit",
        "probe-exit(probe= )",
    ],
)
def test_bad_parameters(spec):
    with pytest.raises(ConfigError):
        get_method(spec)
