import json

import pytest

from leanthink.grading import extract_answer, gsm8k_gold, is_equivalent


@pytest.mark.parametrize(
    "text,expected",
    [
        ("so the total is \\boxed{42}.", "42"),
        ("first \\boxed{1} then \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("nested \\boxed{\\sqrt{x^{2}}} end", "\\sqrt{x^{2}}"),
        ("Natalia sold 72 clips\n#### 72", "72"),
        ("#### 1,234", "1234"),
        ("The answer is 17.", "17"),
        ("Therefore, the final answer is: $\\frac{3}{4}$", "\\frac{3}{4}"),
        ("she pays $12.50 in the end, then 3 more", "3"),
        ("we get 5.00", "5"),
        ("no numbers here", None),
        ("", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_gsm8k_gold():
    assert gsm8k_gold("She has 3+4=7 apples.\n#### 7") == "7"
    with pytest.raises(ValueError):
        gsm8k_gold("no final line")


@pytest.mark.parametrize(
    "pred,gold,ok",
    [
        ("42", "42", True),
        ("42.0", "42", True),
        ("1,000", "1000", True),
        ("\\frac{1}{2}", "0.5", True),
        ("\\frac12", "\\frac{1}{2}", True),
        ("\\dfrac{3}{4}", "\\frac{3}{4}", True),
        ("2\\sqrt{2}", "\\sqrt{8}", True),
        ("41", "42", False),
        (None, "42", False),
        ("", "42", False),
        ("x+1", "1+x", True),
    ],
)
def test_equivalence(pred, gold, ok):
    assert is_equivalent(pred, gold) is ok


def test_equivalence_from_worker_thread():
    """math-verify's default timeout uses signals; grading from a thread must still work."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as ex:
        assert ex.submit(is_equivalent, "\\frac{1}{2}", "0.5").result() is True
        assert ex.submit(is_equivalent, "3", "4").result() is False


# -- a grader failure is a grading error, not a wrong answer ---------------------------------------


@pytest.fixture
def broken_verify(monkeypatch):
    """math-verify raising on any comparison it is asked for (as it does on exotic input)."""
    import math_verify

    def boom(*a, **k):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(math_verify, "verify", boom)


def test_a_grader_failure_is_reported_not_read_as_wrong(broken_verify):
    from leanthink.grading import GradingError, equivalent, grade, grade_outcome

    with pytest.raises(GradingError, match="RecursionError"):
        equivalent("\\frac{1}{2}", "0.5")
    g = grade_outcome("\\frac{1}{2}", "0.5")
    assert g.correct is False and "RecursionError" in g.error and "math-verify" in g.error
    # plain string equality needs no grader: no error
    assert grade_outcome("42", "42.0").correct is True and grade_outcome("42", "42.0").error is None
    assert grade_outcome("Paris.", "paris", "text") == grade_outcome("paris", "paris", "text")
    assert grade_outcome(None, "5").error is None
    # the lenient forms (vote grouping, labels, rewards) read it as "not equal"
    assert is_equivalent("\\frac{1}{2}", "0.5") is False and grade("\\frac{1}{2}", "0.5") is False


def test_bench_records_grading_errors_and_the_report_counts_them(broken_verify, tmp_path):
    from leanthink.eval.report import build_report
    from leanthink.eval.runner import BenchConfig, run_bench

    from .fakes import ScriptedBackend

    be = ScriptedBackend(lambda p: "So it is \\boxed{\\frac{1}{2}}" if "half" in p else "So it is \\boxed{3}")
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"question": "What is half of one?", "answer": "0.5"}) + "\n"
                    + json.dumps({"question": "What is 1+2?", "answer": "3"}) + "\n")
    out = tmp_path / "o"
    store = run_bench(BenchConfig(model="m", dataset=f"jsonl:{data}", methods=["think"], out=str(out), oracle=False),
                      backend=be)
    recs = {r["question"]: r for r in store.records()}
    half, three = recs["What is half of one?"], recs["What is 1+2?"]
    assert half["correct"] is False and half["error"] is None and "RecursionError" in half["grade_error"]
    assert three["correct"] is True and "grade_error" not in three
    store.close()
    paths = build_report(out)
    s = json.loads(paths["summary"].read_text())
    assert s["grade_errors"] == 1 and s["methods"]["think"]["grade_errors"] == 1
    assert s["methods"]["think"]["errors"] == 0
    md = paths["markdown"].read_text()
    assert "**Grading errors:**" in md and "| grading errors | 1 |" in md and "lower bound" in md
    page = paths["html"].read_text()
    assert "Grading errors:" in page and "grading error: math-verify failed" in page


def test_a_clean_report_has_no_grading_error_note(tmp_path):
    from leanthink.eval.report import build_report

    from .test_report import fill, rec

    paths = build_report(fill(tmp_path / "run", [rec("think", "a", correct=True, thinking=3)]))
    assert json.loads(paths["summary"].read_text())["grade_errors"] == 0
    assert "Grading errors:" not in paths["html"].read_text() and "**Grading errors:**" not in paths["markdown"].read_text()
