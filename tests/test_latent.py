"""Latent reasoning (issue 16), pure parts: task splits, LightThinker's mask, Coconut's
curriculum, accounting, capability errors, options and CLI errors, the Pareto views.
No model is loaded here (tests/test_latent_train.py trains and runs models)."""

from __future__ import annotations

import random

import pytest
from typer.testing import CliRunner

from leanthink.errors import CapabilityError, ConfigError
from leanthink.latent import layout
from leanthink.latent.layout import GIST, PAD, PROMPT, TEXT, Pos
from leanthink.latent.task import (TaskSpec, cot_text, eval_examples, make_example, parse_answer, parse_task,
                                   split_reasoning, train_examples)
from leanthink.methods import Task, get_method
from leanthink.result import Usage
from tests.fakes import ScriptedBackend


# -- task ---------------------------------------------------------------------------------------
def test_chain_steps_are_exact_running_totals():
    rng = random.Random(3)
    for _ in range(200):
        ex = make_example(rng, TaskSpec())
        assert len(ex.steps) == 3
        assert eval(ex.question) == int(ex.answer)  # noqa: S307 - digits and +/- only
        total = int(ex.question[0])
        for step in ex.steps:
            lhs, rhs = step.split("=")
            assert lhs.startswith(str(total)) and eval(lhs) == int(rhs) >= 0  # noqa: S307
            total = int(rhs)
        assert total == int(ex.answer)


def test_splits_are_disjoint_and_seeded():
    task = TaskSpec()
    ev = {e.question for e in eval_examples(task, 500)}
    tr = train_examples(task, 1000, seed=0)
    assert len({e.question for e in tr}) == 1000 and not ev & {e.question for e in tr}
    assert [e.question for e in train_examples(task, 50, seed=0)] == [e.question for e in tr[:50]]
    assert [e.question for e in train_examples(task, 50, seed=1)] != [e.question for e in tr[:50]]
    assert [e.question for e in eval_examples(task, 20)] == [e.question for e in eval_examples(task, 20)]


def test_answer_format_round_trip():
    ex = make_example(random.Random(0), TaskSpec())
    text = cot_text(ex)
    assert parse_answer(text) == ex.answer
    reasoning, answer = split_reasoning(text)
    assert reasoning.splitlines() == list(ex.steps) and answer == f"#### {ex.answer}"
    assert parse_answer("5+3=8\n") is None


@pytest.mark.parametrize("spec", ["mult", "chain:2", "chain:9", ""])
def test_bad_task_is_a_config_error(spec):
    with pytest.raises(ConfigError):
        parse_task(spec)


# -- LightThinker mask ---------------------------------------------------------------------------
def test_lightthinker_mask_on_a_hand_made_sequence():
    # P P | a a g | b g | ans ans   (2 prompt tokens, step 1 = 2 tokens, step 2 = 1 token, 1 gist each)
    pos = layout.lightthinker_positions(2, [2, 1], 1, 2)
    assert [p.kind for p in pos] == [PROMPT, PROMPT, TEXT, TEXT, GIST, TEXT, GIST, TEXT, TEXT]
    m = layout.lightthinker_mask(pos)
    allowed = {i: {j for j in range(len(pos)) if m[i][j]} for i in range(len(pos))}
    assert allowed[0] == {0} and allowed[1] == {0, 1}
    assert allowed[3] == {0, 1, 2, 3}  # step 1 sees the prompt and itself
    assert allowed[4] == {0, 1, 2, 3, 4}  # its gist sees the step it compresses
    assert allowed[5] == {0, 1, 4, 5}  # step 2: prompt + step 1's gist, not step 1's text
    assert allowed[6] == {0, 1, 4, 5, 6}
    assert allowed[7] == {0, 1, 4, 6, 7}  # the answer: prompt + every gist + itself
    assert allowed[8] == {0, 1, 4, 6, 7, 8}
    for i in range(len(pos)):  # never the future
        assert all(j <= i for j in allowed[i])


def test_padding_rows_see_only_themselves_and_nobody_sees_padding():
    pos = layout.lightthinker_positions(1, [1], 1, 1) + [Pos(PAD, -1)] * 2
    m = layout.lightthinker_mask(pos)
    assert [j for j in range(len(pos)) if m[4][j]] == [4]
    assert not any(m[i][4] or m[i][5] for i in range(4))


def test_eviction_keeps_what_the_mask_lets_later_tokens_see():
    pos = layout.lightthinker_positions(2, [2, 1], 1, 2)
    kept = layout.kept_after_compression(pos, 1)
    assert kept == [0, 1, 4, 5, 6, 7, 8]
    kept2 = layout.kept_after_compression(pos, 2)
    m = layout.lightthinker_mask(pos)
    assert [j for j in kept2 if j < 7] == [j for j in range(7) if m[7][j]]


# -- Coconut curriculum --------------------------------------------------------------------------
def test_coconut_stages_replace_the_first_k_steps():
    steps = ["7+5=12", "12-3=9", "9+9=18"]
    seen = []
    for k in range(4):
        st = layout.coconut_stage(k, n_steps=3, thoughts_per_step=2, max_stage=3)
        seen.append((st.n_latent, st.kept_steps(steps)))
    assert seen == [(0, steps), (2, steps[1:]), (4, steps[2:]), (6, [])]
    assert layout.coconut_stage(9, 3, 1, 2) == layout.coconut_stage(2, 3, 1, 2)  # past the last stage
    with pytest.raises(ValueError):
        layout.coconut_stage(0, 3, 0, 3)


def test_stage_schedule_is_even_and_absorbs_the_rest():
    assert [layout.stage_of_step(s, 10, 3) for s in (0, 9, 10, 29, 30, 45)] == [0, 0, 1, 2, 3, 3]


def test_batches_are_a_function_of_seed_and_step():
    from leanthink.latent.train import batch_for

    exs = list(range(10))
    a = [batch_for(s, exs, 4, seed=0) for s in range(5)]
    assert a == [batch_for(s, exs, 4, seed=0) for s in range(5)]
    assert sorted(sum(a[:2], []) + a[2][:2]) == exs  # the first epoch covers every example once
    assert batch_for(0, exs, 4, seed=1) != a[0]


# -- accounting and capability -----------------------------------------------------------------
def test_latent_steps_are_their_own_phase_not_tokens():
    u = Usage(thinking=5, answer=2, forced=2, latent=3).add(Usage(latent=1, overhead=4))
    assert u.latent == 4 and u.total == 13
    assert "latent" in u.model_dump()


@pytest.mark.parametrize("name", ["lightthinker", "coconut", "codi", "softcot", "latent-sft"])
def test_backend_without_hidden_states_is_refused_clearly(name):
    be = ScriptedBackend(lambda p: "x")
    with pytest.raises(CapabilityError, match="needs the transformers backend.*scripted"):
        get_method(name)(Task.create("1+2+3+4", be))


@pytest.mark.parametrize("name", ["coconut", "softcot"])
def test_other_backends_with_hidden_states_are_refused_clearly(name):
    from leanthink.backends.base import Capabilities

    be = ScriptedBackend(lambda p: "x", caps=Capabilities(hidden_states=True))
    with pytest.raises(CapabilityError, match="needs the transformers backend"):
        get_method(name)(Task.create("1+2+3+4", be))


def test_a_model_that_is_no_checkpoint_is_a_config_error(tmp_path):
    from leanthink.backends.base import Capabilities

    be = ScriptedBackend(lambda p: "x", caps=Capabilities(hidden_states=True))
    be.name, be.model, be.source_dir = "transformers", object(), str(tmp_path)
    with pytest.raises(ConfigError, match="latent.json"):
        get_method("coconut").check(be)
    (tmp_path / "latent.json").write_text('{"recipe": "codi"}')
    with pytest.raises(ConfigError, match="use method 'codi'"):
        get_method("coconut").check(be)
    get_method("codi").check(be)


def test_method_parameters_are_validated():
    with pytest.raises(ConfigError):
        get_method("coconut(max_tokens=0)")
    with pytest.raises(ConfigError):
        get_method("coconut(checkpoint=/etc)")  # no path parameter: the model is the checkpoint


# -- options and CLI ----------------------------------------------------------------------------
@pytest.mark.parametrize("recipe,kw", [("bogus", {}), ("cot-sft", {"steps": 0}), ("cot-sft", {"lr": 2.0}),
                                       ("softcot", {"lora_r": 8}), ("coconut", {"first_stage": 3, "max_stage": 2}),
                                       ("cot-sft", {"task": "mult"}), ("cot-sft", {"dtype": "int8"})])
def test_bad_options_are_config_errors(recipe, kw):
    from leanthink.latent.train import LatentOptions

    with pytest.raises(ConfigError):
        LatentOptions(**kw).validate(recipe)


def test_cli_bad_recipe_is_one_line_exit_2(tmp_path):
    from leanthink.cli import app

    r = CliRunner().invoke(app, ["train", "latent", "bogus", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2
    assert "unknown recipe 'bogus'" in r.output and "Traceback" not in r.output


def test_cli_writes_the_eval_split(tmp_path):
    import json

    from leanthink.cli import app
    from leanthink.data import load_dataset

    out = tmp_path / "eval.jsonl"
    r = CliRunner().invoke(app, ["train", "latent-data", str(out), "--n", "12"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 12 and all(eval(x["question"]) == int(x["answer"]) for x in rows)  # noqa: S307
    ds = load_dataset(f"jsonl:{out}?kind=number")
    assert [it.answer for it in ds.items] == [x["answer"] for x in rows]


def test_refuses_to_overwrite_a_finished_checkpoint(tmp_path):
    from leanthink.latent.train import train_latent

    (tmp_path / "latent.json").write_text('{"recipe": "cot-sft"}')
    with pytest.raises(ConfigError, match="finished checkpoint"):
        train_latent("cot-sft", "smollm2-135m", str(tmp_path))
    (tmp_path / "latent.json").unlink()
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "state.json").write_text("{}")
    with pytest.raises(ConfigError, match="--resume"):
        train_latent("cot-sft", "smollm2-135m", str(tmp_path))


# -- Pareto views by wall time and peak context -------------------------------------------------
def _rec(correct, total, latency, peak=None, latent=0, prompt=10):
    r = {"correct": correct, "latency_s": latency, "usage": {"prompt": prompt, "total": total, "latent": latent}}
    if peak is not None:
        r["peak_context"] = peak
    return r


def test_views_rank_by_wall_time_and_peak_context():
    from leanthink.eval import views

    rows = views.summary_rows({
        "cot": [_rec(True, 30, 2.0), _rec(True, 30, 2.0)],  # no peak measured: estimated 40
        "coconut": [_rec(True, 10, 3.0, peak=25, latent=3), _rec(False, 10, 3.0, peak=25, latent=3)],
        "light": [_rec(True, 34, 2.5, peak=18), _rec(True, 34, 2.5, peak=18)],
    })
    by = {r["label"]: r for r in rows}
    assert by["cot"]["peak_context"] == 40 and by["cot"]["peak_estimated"]
    assert by["coconut"]["latent"] == 3 and not by["coconut"]["peak_estimated"]
    fr = views.fronts(rows)
    assert fr["tokens"] == ["coconut", "cot"]  # coconut is cheapest in tokens...
    assert fr["wall_s"] == ["cot"]  # ...but not in time
    assert fr["peak_context"] == ["light"]  # LightThinker holds the least context at equal accuracy
    table = "\n".join(views.pareto_table(rows))
    assert "| light | 2 | 100.0%" in table and "40.0~" in table and "18.0 *" in table
