"""Collaboration methods against real models: route and spec-reason on llama.cpp
(Qwen2.5-Coder-0.5B as the task's "large" model, SmolLM2-135M as the small one), and
probe-exit on the transformers backend (SmolLM2-135M GGUF read by transformers).
"""

from __future__ import annotations

import json

import pytest

from leanthink import solve
from leanthink.errors import CapabilityError, ConfigError
from leanthink.methods import Task, get_method

EASY = "What is 2+3?"
HARD = "What is 3847 * 2963?"


def event(r, name):
    return next(e for e in r.trace if e.event == name)


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
    # HARD: the previous test left its prompt in the large model's cache, so escalating is cheap
    r = solve(HARD, method="route(small_model=smollm2-135m,signal=agreement,n_fast=2,max_thinking=8)", backend=small)
    ev = event(r, "route")
    assert ev.detail["fast_model"] == tiny.model_id  # the second model answered first
    assert len(ev.detail["fast_answers"]) == 2 and ev.detail["signal"] == "agreement"
    assert ev.detail["confidence"] in (0.0, 0.5, 1.0)
    if ev.detail["confidence"] < 0.8:
        assert ev.detail["escalated"]
    assert r.samples == 2 + int(ev.detail["escalated"])
    if ev.detail["escalated"]:
        assert ev.detail["slow_model"] == small.model_id and r.usage.overhead >= ev.detail["fast_tokens"]


# --------------------------------------------------------------------------- spec-reason


def test_spec_reason_uses_both_models_and_reports_acceptance(small, tiny):
    r = solve(EASY, method="spec-reason(small_model=smollm2-135m,max_steps=2,max_step_tokens=10,max_thinking=20)",
              backend=small)
    ev = event(r, "spec_reason")
    d = ev.detail
    assert d["small_model"] == tiny.model_id and d["large_model"] == small.model_id
    assert d["proposed"] >= 1 and d["small_tokens"] > 0 and d["large_tokens"] > 0
    assert d["judged"] == len(d["scores"]) and all(0 <= s <= 9 for s in d["scores"])
    if d["judged"]:
        assert d["acceptance_rate"] == pytest.approx(d["accepted"] / d["judged"], abs=1e-3)
        assert d["judge_tokens"] == d["judged"]  # one judgment token per step
    # judge tokens and rejected proposals are overhead; the large model answers
    assert r.usage.overhead >= d["judge_tokens"] + d["rejected_tokens"]
    assert r.usage.thinking <= 20 and r.answer is not None
    # threshold 0 accepts every judged step
    all_in = solve(EASY, method="spec-reason(small_model=smollm2-135m,threshold=0,max_steps=1,max_step_tokens=8)",
                   backend=small)
    d = event(all_in, "spec_reason").detail
    assert d["judged"] == 0 or d["acceptance_rate"] == 1.0


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
