"""The bench report, built from hand-made store contents: numbers, escaping, self-containment."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import pytest

from leanthink.errors import ConfigError
from leanthink.eval.report import build_report
from leanthink.eval.store import Store

COMMAND = "leanthink bench --model qwen2.5-coder-0.5b --dataset gsm8k --methods think,direct --out runs/x"
EVIL = "What is 2+3? <script>alert('x')</script> & more"


def rec(method, item_id, *, correct, thinking, answer=5, forced=0, overhead=0, latency=1.0, error=None,
        finish="stop", question="What is 1+1?", gold="2", seed=0):
    """A record as `run_one` stores it: Result.model_dump() plus the grading fields."""
    usage = {"prompt": 20, "thinking": thinking, "answer": answer, "forced": forced, "overhead": overhead}
    usage["total"] = thinking + answer + forced + overhead
    return {
        "question": question, "method": method, "params": {}, "model": "m", "backend": "fake",
        "emulated_thinking": True, "answer": None if error else gold if correct else "7", "answer_text": "",
        "reasoning": "" if error else f"Let me think about {question}\nWait, check.\nDone.", "finish_reason": finish,
        "usage": usage, "latency_s": latency, "trace": [], "prompt": "", "samples": 1,
        "item_id": item_id, "seed": seed, "gold": gold, "kind": "number", "correct": correct, "error": error,
    }


def oracle_row(item_id, *, thinking, pearl_thinking, seed=0):
    pearl = None if pearl_thinking is None else pearl_thinking + 4
    base = thinking + 5
    return {"item_id": item_id, "seed": seed, "thinking_tokens": thinking, "baseline_tokens": base,
            "pearl_tokens": pearl, "pearl_thinking_tokens": pearl_thinking, "pearl_offset": None,
            "oracle_tokens": min(pearl, base) if pearl is not None else base,
            "probes": 3, "probe_tokens": 12, "trajectory": []}


def fill(directory, records, oracle=(), meta=True):
    store = Store(directory)
    if meta:
        store.set_meta("config", {"model": "qwen2.5-coder-0.5b", "dataset": "gsm8k", "temperature": 0.0,
                                  "concurrency": 1, "oracle": True})
        store.set_meta("versions", {"python": "3.11", "leanthink": "0.1.0"})
        store.set_meta("dataset", {"name": "gsm8k", "source": "local", "n_items": 10, "skipped": []})
        store.set_meta("backend", {"name": "llamacpp", "model_id": "qwen2.5-coder-0.5b"})
        store.set_meta("commands", [COMMAND])
    for r in records:
        store.put(r["method"], r["item_id"], r["seed"], r["correct"], r)
    for o in oracle:
        store.put_oracle(o["item_id"], o["seed"], o)
    store.close()
    return directory


class Balance(HTMLParser):
    """Loose well-formedness: every non-void tag closed in order."""

    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self):
        super().__init__()
        self.stack, self.errors = [], []

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append((tag, list(self.stack[-3:])))
        else:
            self.stack.pop()


@pytest.fixture
def two_methods(tmp_path):
    records = [
        rec("think", "a", correct=True, thinking=100, latency=2.0, question=EVIL, gold="5"),
        rec("think", "b", correct=True, thinking=200, latency=3.0),
        rec("think", "c", correct=False, thinking=300, latency=4.0, finish="length"),
        rec("direct", "a", correct=True, thinking=0, latency=0.5, question=EVIL, gold="5"),
        rec("direct", "b", correct=False, thinking=0, latency=0.5),
        rec("direct", "c", correct=False, thinking=0, latency=0.5),
    ]
    oracle = [oracle_row("a", thinking=100, pearl_thinking=40), oracle_row("b", thinking=200, pearl_thinking=150),
              oracle_row("c", thinking=300, pearl_thinking=None)]
    return fill(tmp_path / "run", records, oracle)


def test_full_report(two_methods):
    paths = build_report(two_methods)
    assert set(paths) == {"summary", "markdown", "html", "plot"}
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![accuracy vs mean total tokens per item](pareto.png)" in paths["markdown"].read_text()
    assert all(p.exists() and p.stat().st_size > 0 for p in paths.values())

    page = paths["html"].read_text(encoding="utf-8")
    assert page.lstrip().startswith("<!DOCTYPE html>") and "<html" in page and page.rstrip().endswith("</html>")
    assert "think" in page and "direct" in page
    assert page.count("data:image/png;base64,") >= 3
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "http://" not in page and "https://" not in page
    assert "<script>" not in page and "&lt;script&gt;" in page
    parser = Balance()
    parser.feed(page)
    assert parser.errors == [] and parser.stack == []
    assert "emulated" in page and "✓" in page and "✗" in page and "<details" in page

    s = json.loads(paths["summary"].read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    think, direct = s["methods"]["think"], s["methods"]["direct"]
    assert think["accuracy"] == pytest.approx(2 / 3) and direct["accuracy"] == pytest.approx(1 / 3)
    assert think["tokens"]["total"]["mean"] == pytest.approx((105 + 205 + 305) / 3)
    assert direct["tokens"]["total"]["mean"] == pytest.approx(5)
    assert direct["vs_baseline"]["right_to_wrong"] == 1 and direct["vs_baseline"]["wrong_to_right"] == 0
    assert s["oracle"]["n"] == 3 and s["oracle"]["share_with_pearl"] == pytest.approx(2 / 3)
    assert s["commands"] == [COMMAND] and s["backend"]["model_id"] == "qwen2.5-coder-0.5b"
    assert set(s["pareto"]) == {"think", "direct"}

    md = paths["markdown"].read_text(encoding="utf-8")
    assert COMMAND in md and "qwen2.5-coder-0.5b" in md and "gsm8k" in md
    assert "66.7 %" in md and "33.3 %" in md and "★" in md and "Oracle early exit" in md
    assert "emulated" in md and "nan" not in md.lower()


def test_one_method_no_oracle_no_meta(tmp_path):
    d = fill(tmp_path / "run", [rec("direct", "a", correct=True, thinking=0), rec("direct", "b", correct=False, thinking=0)],
             meta=False)
    paths = build_report(d)
    page = paths["html"].read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") >= 2 and "No exit-vs-oracle plot" in page
    assert "No oracle analysis" in paths["markdown"].read_text(encoding="utf-8")
    s = json.loads(paths["summary"].read_text())
    assert s["baseline"] is None and s["methods"]["direct"]["accuracy"] == 0.5 and s["commands"] is None


def test_errors_and_nan_render_as_dash(tmp_path):
    records = [rec("think", i, correct=False, thinking=0, answer=0, error="prompt too long") for i in "ab"]
    records += [rec("budget(max_thinking=8)", i, correct=False, thinking=0, answer=0, error="boom <b>") for i in "ab"]
    paths = build_report(fill(tmp_path / "run", records), html=tmp_path / "out" / "custom.html")
    assert paths["html"] == tmp_path / "out" / "custom.html" and paths["html"].exists()
    page, md = paths["html"].read_text(encoding="utf-8"), paths["markdown"].read_text(encoding="utf-8")
    assert "nan" not in md.lower() and not re.search(r">\s*nan", page, re.I)
    assert "–" in md and "boom &lt;b&gt;" in page and "boom <b>" not in page
    s = json.loads(paths["summary"].read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert s["methods"]["think"]["accuracy_per_1k_tokens"] is None and s["methods"]["think"]["errors"] == 2


def test_empty_or_missing_store_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no benchmark results"):
        build_report(tmp_path / "nothing")
    Store(tmp_path / "empty").close()
    with pytest.raises(ConfigError, match="no finished items"):
        build_report(tmp_path / "empty")


def test_another_baseline_for_sampling_methods(tmp_path):
    records = []
    for item, ok_sc, ok_esc in (("a", True, True), ("b", True, False), ("c", False, False)):
        r = rec("sc(k=8)", item, correct=ok_sc, thinking=800)
        r["samples"] = 8
        records.append(r)
        e = rec("esc(k=8,window=2)", item, correct=ok_esc, thinking=200)
        e["samples"] = 2
        records.append(e)
    d = fill(tmp_path / "run", records)
    paths = build_report(d, baseline="sc(k=8)")
    s = json.loads(paths["summary"].read_text())
    assert s["baseline"] == "sc(k=8)"
    esc = s["methods"]["esc(k=8,window=2)"]
    assert esc["vs_baseline"]["token_ratio"] == pytest.approx(205 / 805)
    assert esc["vs_baseline"]["right_to_wrong"] == 1 and esc["vs_baseline"]["wrong_to_right"] == 0
    md = paths["markdown"].read_text()
    assert "| chains per item | 8.00 | 2.00 |" in md
    # the same spec spelled differently is found; an absent one is a clear error
    assert json.loads(build_report(d, baseline="sc(k=8)")["summary"].read_text())["baseline"] == "sc(k=8)"
    with pytest.raises(ConfigError, match="baseline 'bon.*not in"):
        build_report(d, baseline="bon(k=8)")


@pytest.mark.slow
def test_cli_report_with_an_unknown_baseline_is_a_clear_error(two_methods):
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "leanthink.cli", "report", str(two_methods), "--baseline", "sc(k=8)"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "baseline 'sc' is not in" in p.stderr and "direct, think" in p.stderr
    ok = subprocess.run([sys.executable, "-m", "leanthink.cli", "report", str(two_methods), "--baseline", "direct"],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert json.loads((two_methods / "summary.json").read_text())["baseline"] == "direct"
