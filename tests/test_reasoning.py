import pytest

from leanthink.errors import ConfigError
from leanthink.reasoning import StreamSplitter, boxed_closed, family_for, split_reasoning


def test_family_detection():
    assert family_for("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B").name == "deepseek-r1"
    assert family_for("Qwen/Qwen3-8B").name == "qwen3"
    assert family_for("Qwen/QwQ-32B").name == "qwq"
    fam = family_for("qwen2.5-coder-1.5b")
    assert fam.name == "qwen2.5" and fam.emulated and fam.think_start == ""
    assert not family_for("Qwen/Qwen3-8B").emulated
    assert family_for("some/unknown-model").name == "generic-instruct"
    assert family_for("x", "qwen3").name == "qwen3"
    with pytest.raises(ConfigError, match="unknown model family"):
        family_for("x", "nope")


def test_thinking_prefill_not_doubled():
    fam = family_for("deepseek-r1")
    assert fam.thinking_prefill("<|Assistant|><think>\n") == ""
    assert fam.thinking_prefill("<|im_start|>assistant\n") == "<think>\n"


def test_split_complete_text():
    fam = family_for("qwen3")
    assert split_reasoning("a\nb</think>\n\nThe answer is 4", fam) == ("a\nb", "The answer is 4", True)
    assert split_reasoning("still thinking", fam) == ("still thinking", "", False)
    assert split_reasoning("<think>x</think>y", fam, started_inside=False) == ("x", "y", True)
    assert split_reasoning("plain answer", fam, started_inside=False) == ("", "plain answer", True)


@pytest.mark.parametrize("cut", range(1, 12))
def test_stream_splitter_marker_across_chunks(cut):
    fam = family_for("qwen3")
    text = "step one</think>\n\nfinal 4"
    sp = StreamSplitter(fam)
    pieces = []
    for i in range(0, len(text), cut):
        pieces += sp.feed(text[i : i + cut])
    pieces += sp.flush()
    reasoning = "".join(t for c, t in pieces if c == "reasoning")
    content = "".join(t for c, t in pieces if c == "content")
    assert reasoning == "step one"
    assert content == "final 4"
    assert all("<" not in t for c, t in pieces if c == "reasoning")


def test_boxed_closed():
    assert boxed_closed("42}")
    assert not boxed_closed("\\frac{1}{2")
    assert boxed_closed("\\frac{1}{2}}")


def test_emulated_thinking_ends_at_the_boxed_answer():
    fam = family_for("qwen2.5-coder-1.5b")
    text = "Step 1: 2+2=4.\nSo the answer is \\boxed{4}."
    assert split_reasoning(text, fam) == ("Step 1: 2+2=4.\nSo the answer is", "\\boxed{4}.", True)
    sp = StreamSplitter(fam)
    pieces = []
    for i in range(0, len(text), 3):
        pieces += sp.feed(text[i : i + 3])
    pieces += sp.flush()
    assert "".join(t for c, t in pieces if c == "content") == "\\boxed{4}."
    assert fam.force_end() == fam.answer_prefix and fam.thinking_prefill("x") == ""
