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
