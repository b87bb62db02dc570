"""The CLI as a user runs it: a real subprocess, real model, no tracebacks on bad input."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # a real `leanthink` subprocess per test


def run(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "leanthink.cli", *args], capture_output=True, text=True, timeout=timeout)


def test_solve_json(tiny):
    p = run("solve", "What is 2+2?", "--model", "smollm2-135m", "--budget", "20", "--json")
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    assert data["method"] == "think(max_thinking=20)"
    assert data["usage"]["thinking"] <= 20
    assert data["usage"]["total"] == sum(data["usage"][k] for k in ("thinking", "answer", "forced", "overhead"))
    assert data["emulated_thinking"] is True


def test_solve_human_output(tiny):
    p = run("solve", "What is 2+2?", "--model", "smollm2-135m", "--budget", "10", "--no-reasoning")
    assert p.returncode == 0, p.stderr
    assert "Answer:" in p.stdout and "thinking 10" in p.stdout and "overhead" in p.stdout


@pytest.mark.parametrize(
    "args,msg",
    [
        (["solve", "q", "--method", "nope"], "unknown method"),
        (["solve", "q", "--budget", "0"], "budget must be a positive"),
        (["solve", "q", "--model", "no-such-model"], "unknown model"),
        (["solve", "   "], "question is empty"),
        (["solve", "q", "--model", "openai:http://127.0.0.1:9/v1#m?max_retries=0"], "cannot reach"),
    ],
)
def test_bad_input_is_a_clear_error(args, msg):
    p = run(*args)
    assert p.returncode == 2
    assert msg in p.stderr
    assert "Traceback" not in p.stderr


def test_methods_listing():
    p = run("methods", "--json")
    assert p.returncode == 0
    names = {m["name"] for m in json.loads(p.stdout)}
    assert {"think", "direct"} <= names
