"""The bench runner: resumable after a real kill, no double counting, clear errors."""

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from leanthink.errors import ConfigError
from leanthink.eval.runner import BenchConfig, run_bench
from leanthink.eval.store import Store

from .conftest import ROOT

DATASET = "rg:gsm_symbolic?n=6"


def _count(db):
    try:
        with sqlite3.connect(db) as c:
            return c.execute("SELECT COUNT(*) FROM records").fetchone()[0]
    except sqlite3.Error:
        return 0


def _bench_cmd(out):
    return [sys.executable, "-m", "leanthink.cli", "bench", "--model", "smollm2-135m", "--dataset", DATASET,
            "--methods", "think(max_thinking=40,max_answer=20),direct", "--out", str(out), "--no-report", "--no-oracle"]


def test_resume_after_kill_loses_and_double_counts_nothing(tmp_path, tiny):
    out = tmp_path / "run"
    db = out / "results.sqlite"
    proc = subprocess.Popen(_bench_cmd(out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    deadline = time.time() + 240
    while _count(db) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, "bench finished before it could be killed; make the run longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with sqlite3.connect(db) as c:
        before = {(m, i): (d, t) for m, i, d, t in c.execute("SELECT method, item_id, data, created FROM records")}
    assert 3 <= len(before) < 12

    p = subprocess.run(_bench_cmd(out), capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "resuming" in p.stderr
    with sqlite3.connect(db) as c:
        rows = c.execute("SELECT method, item_id, data, created FROM records").fetchall()
    assert len(rows) == 12  # 6 items x 2 methods, each exactly once
    after = {(m, i): (d, t) for m, i, d, t in rows}
    for key, val in before.items():
        assert after[key] == val  # never re-run or re-graded
    # a third run has nothing to do
    p = subprocess.run(_bench_cmd(out), capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 0 and _count(db) == 12


def test_store_refuses_duplicates(tmp_path):
    s = Store(tmp_path)
    assert s.put("think", "a", 0, True, {"x": 1})
    assert not s.put("think", "a", 0, False, {"x": 2})
    assert s.records() == [{"x": 1}] and s.count() == 1


def test_store_refuses_a_different_model(tmp_path):
    s = Store(tmp_path)
    s.check_identity({"model": "a", "dataset": "d"})
    with pytest.raises(ConfigError, match="different run"):
        s.check_identity({"model": "b", "dataset": "d"})


@pytest.mark.parametrize(
    "kw,msg",
    [
        ({"concurrency": 0}, "concurrency"),
        ({"methods": ["think", "think"]}, "twice"),
        ({"methods": ["nope"]}, "unknown method"),
        ({"dataset": "nope"}, "unknown dataset"),
    ],
)
def test_bad_bench_config(tmp_path, kw, msg):
    cfg = BenchConfig(**{"model": "smollm2-135m", "dataset": DATASET, "methods": ["direct"], "out": str(tmp_path), **kw})
    with pytest.raises(ConfigError, match=msg):
        run_bench(cfg)


def test_bench_with_oracle_and_report(tmp_path, small):
    """In process, on the 0.5B: think + direct + oracle, then the report files."""
    from leanthink.eval.report import build_report

    cfg = BenchConfig(model="qwen2.5-coder-0.5b?n_ctx=4096", dataset="rg:basic_arithmetic?n=2",
                      methods=["think", "direct"], out=str(tmp_path), oracle=True)
    store = run_bench(cfg, backend=small)
    recs = store.records()
    assert len(recs) == 4 and {r["method"] for r in recs} == {"think", "direct"}
    assert all(r["gold"] and r["usage"]["total"] > 0 for r in recs)
    oracle = store.oracle()
    assert len(oracle) == 2
    for o in oracle:
        assert o["probes"] >= 1 and o["probe_tokens"] > 0
        assert o["oracle_tokens"] <= o["baseline_tokens"]
        assert o["trajectory"][0]["thinking_tokens"] == 0  # the first cut is "no reasoning at all"
    paths = build_report(tmp_path)
    assert paths["html"].exists() and "think" in paths["markdown"].read_text()


def test_two_shards_share_one_store_and_cover_every_item(tmp_path, tiny):
    common = {"model": "smollm2-135m", "dataset": "rg:basic_arithmetic?n=5", "methods": ["direct"],
              "out": str(tmp_path), "oracle": False}
    a = run_bench(BenchConfig(**common, shard="0/2"), backend=tiny)
    assert len(a.records()) == 3  # positions 0, 2, 4
    b = run_bench(BenchConfig(**common, shard="1/2"), backend=tiny)
    ids = sorted(r["item_id"] for r in b.records())
    assert len(ids) == 5 and len(set(ids)) == 5
    with pytest.raises(ConfigError, match="shard"):
        run_bench(BenchConfig(**common, shard="2/2"), backend=tiny)
