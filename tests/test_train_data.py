"""Post-training data stages: collect (sample + grade + store, resumable) and the compressors.

Compressors run on fixed chains with a scripted scoring function where a model would be, so
their outputs can be checked exactly: the answer text survives verbatim, the kept text is the
original in order, the ratio lands on target, bad parameters are one-line ConfigErrors. Slow
tests use SmolLM2-135M through llama.cpp (surprisal scoring, and a real collect with resume).
"""

from __future__ import annotations

import json
import math
import re

import pytest

from leanthink.errors import ConfigError, DataError
from leanthink.methods import Task
from leanthink.methods.engine import build_prompt
from leanthink.reasoning import family_for
from leanthink.train import dataset as D
from leanthink.train.collect import CollectConfig, collect, load_chains
from leanthink.train.compress import CompressConfig, Context, Drop, Group, compress, get_compressor
from leanthink.train.compress.base import Candidate, ChainRec
from leanthink.train.compress.prune import group_units, prune_tokens
from leanthink.train.compress.runner import verify, work_path
from leanthink.train.compress.select import o1pruner_weight
from leanthink.train.compress.scoring import from_offset
from leanthink.train.compress.steps import answer_nll, first_token_surprisal, join_steps, split_steps

from .conftest import DATA_DIR
from .fakes import ScriptedBackend

QWEN = family_for("qwen2.5-coder-0.5b")
R1 = family_for("deepseek-r1-distill-qwen-1.5b")

# -- a scripted scorer: tokens are words with their leading whitespace, newline runs apart ------

_TOK = re.compile(r"\n+|[ \t]*[^\s]+|[ \t]+")


class ScriptedScorer:
    """Log-probabilities from a function of (context, token, index): where a model would be."""

    name = "scripted"

    def __init__(self, fn=None):
        self.fn = fn or (lambda ctx, tok, i: -1.0)
        self.calls = 0

    def count_tokens(self, text: str) -> int:
        return len(_TOK.findall(text))

    def token_logprobs(self, context: str, text: str, start: int = 0, end: int | None = None):
        """Like a real scorer: the whole text is tokenized, the tokens overlapping [start, end)
        returned; `fn` sees the context plus the text before the token."""
        self.calls += 1
        out, pos = ([], []), 0
        for i, t in enumerate(_TOK.findall(text)):
            if pos + len(t) > start and (end is None or pos < end):
                out[0].append(t.encode())
                out[1].append(self.fn(context + text[:pos], t, i))
            pos += len(t)
        return out


def chain(reasoning: str, answer_text: str = "\\boxed{72}.", *, seed=0, correct=True, tokens=None, finish="stop",
          item="gsm8k_train/0", gold="72") -> ChainRec:
    return ChainRec(item_id=item, seed=seed, question="How many clips?", gold=gold, kind="number",
                    reasoning=reasoning, answer_text=answer_text, answer=gold if correct else "1", correct=correct,
                    thinking_tokens=tokens if tokens is not None else len(_TOK.findall(reasoning)), answer_tokens=4,
                    finish_reason=finish, prompt="<user>How many clips?</user><assistant>")


def group(*chains, reference=None) -> Group:
    c0 = chains[0]
    return Group(c0.item_id, c0.question, c0.gold, c0.kind, list(chains), reference=reference)


def ctx(scorer=None, backend=None, family=QWEN) -> Context:
    return Context(family=family, scorer_factory=(lambda: scorer) if scorer else None,
                   backend_factory=(lambda: backend) if backend else None)


def words(text: str) -> list[str]:
    return text.split()


def is_subsequence(small: list[str], big: list[str]) -> bool:
    it = iter(big)
    return all(any(w == b for b in it) for w in small)


LONG = ("First, we read the problem carefully and note what is asked.\n\n"
        "Natalia sold 48 clips in April.\n\n"
        "In May she sold half as many, so 48 / 2 = 24 clips.\n\n"
        "Let us double check this, because it is always good to verify.\n\n"
        "Altogether she sold 48 + 24 = 72 clips, so the answer is")


# -- registry and parameters ----------------------------------------------------------------


@pytest.mark.parametrize("spec,msg", [
    ("tokenskip(ratio=0)", "ratio: Input should be greater than 0"),
    ("tokenskip(ratio=1.5)", "ratio: Input should be less than or equal to 1"),
    ("spirit(ratio=-0.2)", "ratio: Input should be greater than 0"),
    ("asap(ratio=abc)", "ratio: Input should be a valid number"),
    ("tokenskip(rate=0.5)", "rate: unknown parameter"),
    ("shortest(weights=bad)", "weights: Input should be 'none' or 'o1pruner'"),
    ("tokenskip(0.5)", "must be key=value"),
    ("prune", "unknown compressor 'prune'. Known compressors: asap, rewrite, shortest, spirit, tokenskip"),
    ("", "compressor name is empty"),
    ("tokenskip(ratio=0.5", "cannot parse compressor spec"),
    ("tokenskip(mix=0.5/1.2)", "every ratio in mix must be in (0, 1]; got 1.2"),
    ("tokenskip(mix=0.5/x)", "mix must be ratios separated by '/'"),
])
def test_bad_compressor_specs_are_one_line_config_errors(spec, msg):
    with pytest.raises(ConfigError, match=re.escape(msg)) as exc:
        get_compressor(spec)
    assert "\n" not in str(exc.value)


def test_specs_are_canonical_and_name_the_ratio():
    assert get_compressor("shortest").spec == "shortest"
    assert get_compressor("tokenskip").spec == "tokenskip(ratio=0.6)"
    assert get_compressor("tokenskip(ratio=0.5)").spec == "tokenskip(ratio=0.5)"
    assert get_compressor("asap(anchor=none, ratio=0.5)").spec == "asap(ratio=0.5,anchor=None)"
    assert get_compressor("shortest(weights=o1pruner)").spec == "shortest(weights=o1pruner)"


# -- shortest + O1-Pruner ---------------------------------------------------------------------


def test_shortest_picks_the_shortest_natural_correct_chain():
    g = group(chain("a b c d e f", seed=0, tokens=60), chain("a b c", seed=1, tokens=30),
              chain("a", seed=2, tokens=10, correct=False), chain("a b", seed=3, tokens=20, finish="budget"))
    [c] = get_compressor("shortest").apply(g, ctx())
    assert isinstance(c, Candidate) and c.source.seed == 1 and c.weight == 1.0
    assert (c.orig_tokens, c.tokens) == (30, 30)  # orig: the item's mean over its 4 samples
    [c] = get_compressor("shortest").apply(g, ctx(), include_cut=True)
    assert c.source.seed == 3
    [d] = get_compressor("shortest").apply(group(chain("x", correct=False)), ctx())
    assert isinstance(d, Drop) and d.reason == "no_correct_chain"
    [d] = get_compressor("shortest").apply(group(chain("x", finish="budget")), ctx())
    assert d.reason == "only_cut_chains_correct"


def test_o1pruner_weights_exact():
    # L̄ = 40, Ā = 0.5; chain L = 20 correct: (40-20)/20 + 2*(1-0.5) = 2.0; L = 50 correct: -0.2 + 1 = 0.8
    assert o1pruner_weight(20, True, 40, 0.5, 2.0) == pytest.approx(2.0)
    assert o1pruner_weight(50, True, 40, 0.5, 2.0) == pytest.approx(0.8)
    assert o1pruner_weight(40, False, 40, 0.5, 1.0) == pytest.approx(-0.5)
    g = group(chain("a", seed=0, tokens=20), chain("b", seed=1, tokens=50), chain("c", seed=2, tokens=60, correct=False),
              chain("d", seed=3, tokens=30, correct=False))
    comp = get_compressor("shortest(weights=o1pruner,pick=all)")
    cands = comp.apply(g, ctx())
    assert [c.source.seed for c in cands] == [0, 1]
    assert [c.weight for c in cands] == pytest.approx([2.0, 0.8])
    exs = comp.finalize([{"weight": c.weight} for c in cands])
    assert [e["weight"] for e in exs] == pytest.approx([2.0 / 1.4, 0.8 / 1.4])  # mean 1
    clipped = get_compressor("shortest(weights=o1pruner,alpha=0)").apply(group(
        chain("a", seed=0, tokens=100), chain("b", seed=1, tokens=10, correct=False)), ctx())
    assert clipped[0].weight == 0.0  # (55-100)/100 < 0 is clipped at min_weight


# -- tokenskip ------------------------------------------------------------------------------


IMPORTANT = {"Natalia", "sold", "half", "clips", "Altogether", "May", "April"}


def word_surprisal(ctx_, tok, i):
    w = tok.strip()
    return -(5.0 + 0.01 * i) if w in IMPORTANT else -(0.1 + 0.001 * i)


def test_prune_tokens_drops_lowest_words_keeps_numbers_and_order():
    pieces = [b"We", b" sold", b" 48", b" red", b" clips", b"\n\n", b"So", b" 48", b" /", b" 2"]
    surpr = [0.1, 3.0, 0.0, 0.2, 2.0, 0.0, 0.3, 0.0, 0.0, 0.0]
    units = group_units(pieces)
    assert units == [[0], [1], [2], [3], [4], [5], [6], [7], [8], [9]]
    text, kept = prune_tokens(pieces, surpr, 0.7, protect="numbers+ops")
    assert (text, kept) == ("sold 48 clips\n\n48 / 2", 7)
    text, kept = prune_tokens(pieces, surpr, 0.7, protect="numbers")
    assert kept == 7 and "/" not in text and text.startswith("We sold 48") is False
    assert prune_tokens(pieces, surpr, 1.0)[0] == "We sold 48 red clips\n\nSo 48 / 2"
    # sub-word pieces stay together: a word is dropped whole or kept whole
    assert group_units([b" to", b"ken", b"ized", b" x"]) == [[0, 1, 2], [3]]


@pytest.mark.parametrize("ratio", [0.5, 0.7, 0.9])
def test_tokenskip_ratio_answer_numbers_order(ratio):
    sc = ScriptedScorer(word_surprisal)
    comp = get_compressor(f"tokenskip(ratio={ratio})")
    [c] = comp.apply(group(chain(LONG)), ctx(sc))
    assert c.answer_text == "\\boxed{72}." and c.pruned and c.user_suffix == f"Compression ratio: {ratio:g}"
    assert abs(c.tokens / c.orig_tokens - ratio) <= 0.05
    assert is_subsequence(words(c.reasoning), words(LONG))
    assert re.findall(r"\d+", c.reasoning) == re.findall(r"\d+", LONG)
    assert all(op in c.reasoning for op in ("/", "+", "="))
    assert "\n\n\n" not in c.reasoning and all(p.strip() for p in c.reasoning.split("\n\n"))
    if ratio >= 0.9:  # step boundaries survive while a step has words left
        assert c.reasoning.count("\n\n") == LONG.count("\n\n")
    assert comp.importance == "self-information"
    if ratio <= 0.7:  # the unimportant filler goes first
        assert "carefully" not in c.reasoning and "Natalia" in c.reasoning


def test_tokenskip_cannot_go_below_protected_tokens():
    sc = ScriptedScorer()
    [c] = get_compressor("tokenskip(ratio=0.1)").apply(group(chain("12 + 30 = 42 apples")), ctx(sc))
    assert c.reasoning == "12 + 30 = 42"
    assert c.tokens / c.orig_tokens == pytest.approx(5 / 6)  # every token left is protected


def test_tokenskip_without_ratio_prompt_and_llmlingua_missing(monkeypatch):
    [c] = get_compressor("tokenskip(ratio=0.5,ratio_prompt=false)").apply(group(chain(LONG)), ctx(ScriptedScorer()))
    assert c.user_suffix == ""
    monkeypatch.setitem(__import__("sys").modules, "llmlingua", None)
    comp = get_compressor("tokenskip(importance=llmlingua2)")
    assert comp.importance == "llmlingua2"
    with pytest.raises(ConfigError, match="needs the optional 'llmlingua' package"):
        comp.apply(group(chain(LONG)), ctx(ScriptedScorer()))


def test_tokenskip_mix_gives_each_chain_one_ratio_stably():
    sc = ScriptedScorer(word_surprisal)
    comp = get_compressor("tokenskip(mix=0.5/0.9)")
    chains = [chain(LONG, seed=s) for s in range(8)]
    first = comp.apply(group(*chains), ctx(sc))
    again = comp.apply(group(*chains), ctx(sc))
    targets = [c.meta["target_ratio"] for c in first]
    assert targets == [c.meta["target_ratio"] for c in again]  # stable: a resume gives the same γ
    assert set(targets) == {0.5, 0.9}  # 8 chains, both ratios used
    for c in first:
        t = c.meta["target_ratio"]
        assert c.user_suffix == f"Compression ratio: {t:g}"
        assert abs(c.tokens / c.orig_tokens - t) <= 0.05
    assert comp.user_suffix() == "Compression ratio: 0.5 | Compression ratio: 0.9"
    assert comp.spec == "tokenskip(mix=0.5/0.9)"


# -- steps: spirit and asap -----------------------------------------------------------------


def test_split_steps_lines_display_math_and_joins():
    steps, seps = split_steps(LONG)
    assert len(steps) == 5 and seps == ["", "\n\n", "\n\n", "\n\n", "\n\n"]
    assert join_steps(steps, seps, list(range(5))) == LONG
    steps, seps = split_steps("Half of 48:\n\\[\n48 / 2 = 24\n\\]\nThen add.\nTotal 72.")
    assert steps == ["Half of 48:\n\\[\n48 / 2 = 24\n\\]", "Then add.", "Total 72."] and seps == ["", "\n", "\n"]
    steps, seps = split_steps("Steps:\n1. a 4\n2. b 5\n\nSo 9")
    assert steps == ["Steps:", "1. a 4", "2. b 5", "So 9"]
    assert join_steps(steps, seps, [0, 3]) == "Steps:\n\nSo 9" and join_steps(steps, seps, [0, 1]) == "Steps:\n1. a 4"
    assert join_steps(steps, seps, [1, 2]) == "1. a 4\n2. b 5"


def spirit_scorer():
    """Answer NLL rises a lot without the step holding '48 / 2', a little without the others."""
    def fn(context, tok, i):
        penalty = 0.0 if "48 / 2" in context else 3.0
        penalty += 0.0 if "48 + 24" in context else 2.0
        penalty += 0.01 * context.count("double check")  # filler barely matters
        return -(0.5 + penalty) if "72}" in tok else -0.5  # only the boxed value's token carries the signal
    return ScriptedScorer(fn)


def test_spirit_removes_the_steps_the_answer_does_not_need():
    sc = spirit_scorer()
    comp = get_compressor("spirit(ratio=0.6)")
    [c] = comp.apply(group(chain(LONG)), ctx(sc))
    assert is_subsequence(split_steps(c.reasoning)[0], split_steps(LONG)[0])  # whole steps, original order
    assert "48 / 2 = 24" in c.reasoning and c.reasoning.endswith("so the answer is")  # needed step + last step kept
    assert "carefully" not in c.reasoning and "double check" not in c.reasoning
    assert c.tokens <= 0.6 * c.orig_tokens + 1e-9 and c.answer_text == "\\boxed{72}."
    assert comp.importance == "answer-perplexity" and c.meta["steps_kept"] < c.meta["steps"]


def test_answer_nll_scores_the_boxed_value_in_the_whole_completion():
    seen = []

    class Recorder(ScriptedScorer):
        def token_logprobs(self, context, text, start=0, end=None):
            seen.append((context, text, start, end))
            return super().token_logprobs(context, text, start, end)

    c = chain("So the total is \\(", "\\boxed{72}\\).")
    answer_nll(ctx(Recorder()), c, c.reasoning)
    context, text, start, end = seen[-1]
    assert context == c.prompt and text == "So the total is \\(\\boxed{72}\\)." and text[start:end] == "72"
    r1 = chain("3 + 4 = 7", "The answer is \\boxed{7}.")
    r1.prompt = "<user>q</user><assistant><think>\n"
    answer_nll(ctx(Recorder(), family=R1), r1, r1.reasoning)
    assert seen[-1][1] == "3 + 4 = 7\n</think>\n\nThe answer is \\boxed{7}."  # no second <think>
    assert from_offset([b"ab", b"cd", b"ef"], [1.0, 2.0, 3.0], "abcdef", 3) == ([b"cd", b"ef"], [2.0, 3.0])
    assert from_offset([b"ab", b"cd", b"ef"], [1.0, 2.0, 3.0], "abcdef", 4) == ([b"ef"], [3.0])
    assert from_offset([b"ab", b"cd", b"ef"], [1.0, 2.0, 3.0], "abcdef", 1, 3) == ([b"ab", b"cd"], [1.0, 2.0])


def test_spirit_and_asap_drop_chains_with_one_step():
    for spec in ("spirit", "asap"):
        [d] = get_compressor(spec).apply(group(chain("48 / 2 = 24 so the answer is")), ctx(ScriptedScorer()))
        assert isinstance(d, Drop) and d.reason == "too_few_steps"


def test_asap_anchor_pass_then_first_token_surprisal():
    ref = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nAltogether 48+24 = <<48+24=72>>72.\n#### 72"
    # anchor pass alone (ratio=1 keeps everything else): number-free steps go, anchored ones stay
    [c] = get_compressor("asap(ratio=1)").apply(group(chain(LONG), reference=ref), ctx(ScriptedScorer()))
    assert c.reasoning == "\n\n".join(split_steps(LONG)[0][1:3] + split_steps(LONG)[0][4:])
    assert c.meta["anchor_dropped"] == 2
    # fine pass: the step whose first token is least surprising goes first
    first = {"Natalia": -4.0, "In": -0.2, "Altogether": -3.0, "First,": -2.0, "Let": -1.0}

    def fn(context, tok, i):
        return first.get(tok.strip(), -1.0)
    [c] = get_compressor("asap(ratio=0.75,anchor=none)").apply(group(chain(LONG)), ctx(ScriptedScorer(fn)))
    assert "In May" not in c.reasoning and "Natalia sold 48" in c.reasoning
    assert is_subsequence(split_steps(c.reasoning)[0], split_steps(LONG)[0])


def test_first_token_surprisal_maps_steps_to_their_first_token():
    sc = ScriptedScorer(lambda ctx_, tok, i: -float(i))
    steps, seps = ["a b", "c d e", "f"], ["", "\n\n", "\n"]
    assert first_token_surprisal(ctx(sc), "p", steps, seps, [0, 1, 2]) == [0.0, 3.0, 7.0]
    assert first_token_surprisal(ctx(sc), "p", steps, seps, [0, 2]) == [0.0, 3.0]


# -- rewrite --------------------------------------------------------------------------------


def test_rewrite_is_difficulty_aware_and_graded():
    prompts = []

    def respond(prompt):
        prompts.append(prompt)
        return "48 / 2 = 24; 48 + 24 = 72. \\boxed{72}"

    be = ScriptedBackend(respond)
    g = group(chain(LONG, seed=0), chain(LONG, seed=1), chain("x", seed=2, correct=False), chain("y", seed=3, correct=False))
    [c] = get_compressor("rewrite").apply(g, ctx(backend=be))
    assert c.reasoning == "48 / 2 = 24; 48 + 24 = 72." and c.answer_text == "\\boxed{72}"
    assert c.meta["difficulty"] == "medium" and "one short line per step" in prompts[0] and "\\boxed{72}" in prompts[0]
    assert verify(c, g, ctx(backend=be), rederive=False)[0] is None
    wrong = ScriptedBackend(lambda p: "48 / 2 = 20. \\boxed{68}")
    [c] = get_compressor("rewrite").apply(group(chain(LONG)), ctx(backend=wrong))
    assert verify(c, group(chain(LONG)), ctx(backend=wrong), rederive=False)[0] == "wrong_answer"
    longer = ScriptedBackend(lambda p: LONG + " and more words here. \\boxed{72}")
    [d] = get_compressor("rewrite").apply(group(chain(LONG)), ctx(backend=longer))
    assert isinstance(d, Drop) and d.reason == "rewrite_not_shorter"


# -- verification ---------------------------------------------------------------------------


def test_verify_drops_changed_or_wrong_answers_and_rederives():
    g = group(chain(LONG))
    src = g.chains[0]
    ok = Candidate(src, "48 / 2 = 24. 48 + 24 = 72, so the answer is", src.answer_text, 40, 12, pruned=True)
    assert verify(ok, g, ctx(), rederive=False) == (None, "48 / 2 = 24. 48 + 24 = 72, so the answer is \\boxed{72}.")
    changed = Candidate(src, "x", "\\boxed{71}.", 40, 1, pruned=True)
    assert verify(changed, g, ctx(), rederive=False)[0] == "answer_changed"
    wrong = Candidate(src, "x", "\\boxed{71}.", 40, 1)
    assert verify(wrong, g, ctx(), rederive=False)[0] == "wrong_answer"
    assert verify(Candidate(src, "  ", src.answer_text, 40, 0), g, ctx(), rederive=False)[0] == "empty_reasoning"
    good_model = ScriptedBackend(lambda p: "72}")
    bad_model = ScriptedBackend(lambda p: "70}")
    assert verify(ok, g, ctx(backend=good_model), rederive=True)[0] is None
    assert good_model.calls[0].endswith("so the answer is" + QWEN.force_end())
    assert verify(ok, g, ctx(backend=bad_model), rederive=True)[0] == "not_rederived"


# -- dataset format -------------------------------------------------------------------------


def test_prompt_matches_build_prompt_and_completion_formats():
    be = ScriptedBackend(lambda p: "")
    task = Task.create("What is 3 + 4?", be)
    assert build_prompt(task) == be.render_chat(D.prompt_messages("What is 3 + 4?"), add_generation_prompt=True)
    msgs = D.prompt_messages("Q?", user_suffix=D.ratio_suffix(0.5))
    assert msgs == [{"role": "user", "content": "Q?\n\nPlease reason step by step, and put your final answer within "
                                                "\\boxed{}.\n\nCompression ratio: 0.5"}]
    assert D.format_completion(R1, "r", "The answer is \\boxed{7}.") == "<think>\nr\n</think>\n\nThe answer is \\boxed{7}."
    assert D.format_completion(QWEN, "so the total is \\(", "\\boxed{7}\\).") == "so the total is \\(\\boxed{7}\\)."
    assert D.format_completion(QWEN, "the answer is", "\\boxed{7}") == "the answer is \\boxed{7}"
    assert D.format_completion(QWEN, "3 + 4 = 7.", "\\boxed{7}") == "3 + 4 = 7.\n\n\\boxed{7}"


def test_read_examples_one_line_errors(tmp_path):
    ex = D.make_example("Q?", "r \\boxed{1}", meta={"gold": "1"})
    p = D.write_examples(tmp_path / "d.jsonl", [ex, ex], {"kept": 2})
    assert D.read_examples(p) == [ex, ex]
    assert json.loads(D.summary_path(p).read_text()) == {"kept": 2}
    cases = {
        "missing": (None, "does not exist"),
        "fields": ('{"question": "q", "response": "r"}', "expected fields 'prompt' and 'completion' (missing prompt, completion; has question, response)"),
        "json": ("{oops", ":1: not JSON"),
        "role": (json.dumps({**ex, "completion": [{"role": "user", "content": "x"}]}), "last 'completion' message must have role 'assistant'"),
        "weight": (json.dumps({**ex, "weight": -1}), "'weight' must be a finite number >= 0"),
        "empty": ("", "no examples"),
    }
    for name, (line, msg) in cases.items():
        f = tmp_path / f"{name}.jsonl"
        if line is not None:
            f.write_text(line + "\n")
        with pytest.raises(DataError, match=re.escape(msg)) as exc:
            D.read_examples(f)
        assert "\n" not in str(exc.value)


# -- collect (scripted backend: control flow; real model below) ------------------------------


def golds(n=3) -> dict[str, str]:
    from leanthink.data import load_dataset

    return {it.question: it.answer for it in load_dataset("gsm8k_train", limit=n, data_dir=str(DATA_DIR)).items}


def scripted_solver(n=3):
    """Sample j of every question alternates: long correct, short correct, wrong."""
    gold = golds(n)
    count = {"n": 0}

    def respond(prompt):
        q = next(q for q in gold if q in prompt)
        j = count["n"] % 3
        count["n"] += 1
        if j == 0:
            return ("First we read the question again and think about it.\n\nWe compute the needed values step by step."
                    f"\n\nSo the answer is \\boxed{{{gold[q]}}}.")
        if j == 1:
            return f"We compute it.\n\nSo the answer is \\boxed{{{gold[q]}}}."
        return "Quick guess: \\boxed{123456}."
    return respond


def test_collect_refuses_evaluation_data(tmp_path):
    for spec in ("gsm8k", "math500", "AIME24", "builtin", f"jsonl:{DATA_DIR / 'gsm8k_dev.jsonl'}",
                 str(DATA_DIR / "math500_test.jsonl"), "hf:openai/gsm8k?config=main"):
        with pytest.raises(ConfigError, match="refusing to collect training chains") as exc:
            collect(CollectConfig(dataset=spec, out=str(tmp_path / "c")), backend=ScriptedBackend(lambda p: ""))
        assert "\n" not in str(exc.value)
    assert not (tmp_path / "c").exists()  # refused before anything was created


def test_collect_bad_input_one_line_errors(tmp_path):
    be = ScriptedBackend(lambda p: "")
    with pytest.raises(DataError, match="data file not found"):
        collect(CollectConfig(dataset=f"jsonl:{tmp_path / 'nope.jsonl'}", out=str(tmp_path / "a")), backend=be)
    bad = tmp_path / "train.jsonl"
    bad.write_text('{"q": "What is 1+1?", "a": "2"}\n')
    with pytest.raises(DataError, match=r"train.jsonl:1: missing question field") as exc:
        collect(CollectConfig(dataset=f"jsonl:{bad}", out=str(tmp_path / "b")), backend=be)
    assert "\n" not in str(exc.value)
    with pytest.raises(ConfigError, match="k > 1 needs temperature > 0"):
        collect(CollectConfig(dataset="gsm8k_train", out=str(tmp_path / "c"), temperature=0.0), backend=be)
    with pytest.raises(ConfigError, match="k \\(samples per question\\) must be a positive integer"):
        collect(CollectConfig(dataset="gsm8k_train", out=str(tmp_path / "c"), k=0), backend=be)


def test_collect_stores_k_graded_samples_and_resumes(tmp_path):
    be = ScriptedBackend(scripted_solver(), model_id="scripted-qwen2.5")
    cfg = CollectConfig(dataset="gsm8k_train", out=str(tmp_path / "chains"), model="scripted", k=3, limit=3,
                        data_dir=str(DATA_DIR))
    seen = []

    def interrupt(st):
        seen.append(st["done"])
        if st["new"] == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        collect(cfg, backend=be, on_progress=interrupt)
    assert len(be.calls) == 4
    summary = collect(cfg, backend=be)
    assert len(be.calls) == 9  # only the 5 missing chains ran
    assert summary["items"] == 3 and summary["samples"] == 9
    assert summary["accuracy"] == pytest.approx(6 / 9, abs=1e-3) and summary["pass_at_k"] == 1.0
    assert summary["this_run"]["new_samples"] == 5
    assert json.loads((tmp_path / "chains" / "summary.json").read_text())["samples"] == 9
    recs, meta = load_chains(tmp_path / "chains")
    assert sorted((r["item_id"], r["seed"]) for r in recs) == [(f"gsm8k_train/{i}", s) for i in range(3) for s in range(3)]
    assert meta["backend"]["family"] == "qwen2.5" and meta["identity"]["kind"] == "collect"
    # a different temperature would mix incomparable chains: refused
    with pytest.raises(ConfigError, match="holds results of a different run"):
        collect(CollectConfig(dataset="gsm8k_train", out=str(tmp_path / "chains"), model="scripted", k=3, limit=3,
                              temperature=0.9, data_dir=str(DATA_DIR)), backend=be)


def test_collect_from_reasoning_gym_uses_its_own_generator_seed(tmp_path):
    be = ScriptedBackend(lambda p: "We add.\n\nSo the answer is \\boxed{0}.")
    s = collect(CollectConfig(dataset="rg:basic_arithmetic?n=2", out=str(tmp_path / "rg"), model="scripted", k=2),
                backend=be)
    recs, meta = load_chains(tmp_path / "rg")
    assert s["items"] == 2 and s["samples"] == 4 and len(be.calls) == 4
    assert all(r["item_id"].startswith("basic_arithmetic/seed1/") for r in recs)  # bench generates with seed 0


def test_collect_progress_names_what_the_accuracy_counts():
    from leanthink.train.collect import _progress_line

    last = {"item_id": "gsm8k_train/3", "seed": 1, "correct": True, "usage": {"thinking": 90, "answer": 5},
            "finish_reason": "stop"}
    st = {"total": 12, "done": 10, "new": 4, "correct": 1, "tokens": 380, "elapsed_s": 40.0, "last": last}
    line = _progress_line(st, 0.0)
    assert line.startswith("[10/12] gsm8k_train/3 s1 ok 90+5 tok stop")
    assert "correct this run 25.0% (1/4)" in line and "9.5 tok/s" in line and "ETA 20s" in line


def test_cli_errors_are_one_line(tmp_path):
    from typer.testing import CliRunner

    from leanthink.train.cli import app

    r = CliRunner().invoke(app, ["collect", "--dataset", "math500", "--out", str(tmp_path / "c")])
    assert r.exit_code == 2 and "refusing to collect training chains from 'math500'" in r.output
    r = CliRunner().invoke(app, ["compress", "--chains", str(tmp_path), "--compressor", "tokenskip(ratio=2)",
                                 "--out", str(tmp_path / "d.jsonl")])
    assert r.exit_code == 2 and "ratio: Input should be less than or equal to 1" in r.output
    assert "Traceback" not in r.output


def test_compress_end_to_end_writes_verified_jsonl_and_resumes(tmp_path):
    be = ScriptedBackend(scripted_solver(), model_id="scripted-qwen2.5")
    collect(CollectConfig(dataset="gsm8k_train", out=str(tmp_path / "chains"), model="scripted", k=3, limit=3,
                          data_dir=str(DATA_DIR)), backend=be)
    out = tmp_path / "data" / "short.jsonl"
    s = compress(CompressConfig(chains=str(tmp_path / "chains"), spec="shortest", out=str(out)))
    rows = D.read_examples(out)
    assert s["kept"] == 3 == len(rows) and s["dropped"] == 0 and s["importance"] is None
    assert all(r["completion"][0]["content"].startswith("We compute it.") for r in rows)
    assert rows[0]["meta"]["item_id"] == "gsm8k_train/0" and rows[0]["meta"]["source"] == "gsm8k_train"
    assert s["token_ratio"] < 1 and json.loads(D.summary_path(out).read_text())["kept"] == 3

    sc = ScriptedScorer(lambda c, t, i: -(0.1 + 0.01 * i))
    out2 = tmp_path / "data" / "ts.jsonl"
    cfg = CompressConfig(chains=str(tmp_path / "chains"), spec="tokenskip(ratio=0.5)", out=str(out2))
    s2 = compress(cfg, scorer=sc)
    assert s2["kept"] == 6 and s2["importance"] == "self-information" and s2["scorer"] == "scripted"
    assert s2["user_suffix"] == "Compression ratio: 0.5"
    assert set(s2["by_target_ratio"]) == {"0.5"} and s2["by_target_ratio"]["0.5"]["examples"] == 6
    assert s["by_target_ratio"] is None  # shortest prunes nothing: no target ratio
    assert all(r["meta"]["compressor"] == "tokenskip(ratio=0.5)" for r in D.read_examples(out2))
    calls = sc.calls
    compress(cfg, scorer=sc)  # resumed from the work file: nothing rescored
    assert sc.calls == calls and work_path(out2).exists()
    with pytest.raises(ConfigError, match="holds work of another run"):
        compress(CompressConfig(chains=str(tmp_path / "chains"), spec="tokenskip(ratio=0.7)", out=str(out2)), scorer=sc)
    with pytest.raises(DataError, match="no collected chains"):
        compress(CompressConfig(chains=str(tmp_path / "nothing"), spec="shortest", out=str(tmp_path / "x.jsonl")))
    with pytest.raises(ConfigError, match="must be a .jsonl file path"):
        compress(CompressConfig(chains=str(tmp_path / "chains"), spec="shortest", out=str(tmp_path / "x.txt")))


# -- real models (slow) ---------------------------------------------------------------------


@pytest.mark.slow
def test_llama_scorer_surprisal_on_smollm(tiny):
    from leanthink.train.compress.scoring import LlamaScorer

    from .conftest import smollm_path

    sc = LlamaScorer(smollm_path(), "smollm2-135m", n_ctx=512)
    prompt = tiny.render_chat(D.prompt_messages("Natalia sold 48 clips in April and half as many in May. Total?"))
    text = "In May she sold 48 / 2 = 24 clips.\n\nAltogether 48 + 24 = 72 clips, so the answer is"
    pieces, lps = sc.token_logprobs(prompt, text)
    assert b"".join(pieces).decode() == text and len(lps) == sc.count_tokens(text)
    assert all(x <= 0 and math.isfinite(x) for x in lps) and min(lps) < -1
    again = sc.token_logprobs(prompt, text)[1]  # the whole sequence comes from the cache
    other = sc.token_logprobs(prompt, "Something else entirely.")[1]
    fresh = sc.token_logprobs(prompt, text)[1]  # prefix reused, suffix re-evaluated
    assert again == pytest.approx(lps, abs=1e-3) and fresh == pytest.approx(lps, abs=1e-3) and len(other) > 0
    src = chain(text)
    src.prompt = prompt
    [c] = get_compressor("tokenskip(ratio=0.6)").apply(group(src), ctx(sc))
    assert re.findall(r"\d+", c.reasoning) == re.findall(r"\d+", text) and c.answer_text == "\\boxed{72}."
    assert c.tokens < c.orig_tokens and is_subsequence(words(c.reasoning), words(text))
    sc.close()


@pytest.mark.slow
def test_collect_real_smollm_three_items_and_resume(tmp_path, tiny):
    cfg = CollectConfig(dataset="gsm8k_train", out=str(tmp_path / "chains"), model="smollm2-135m", k=2, limit=3,
                        max_thinking=48, max_answer=16, data_dir=str(DATA_DIR))

    def interrupt(st):
        if st["new"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        collect(cfg, backend=tiny, on_progress=interrupt)
    assert len(load_chains(tmp_path / "chains")[0]) == 2
    progress = []
    s = collect(cfg, backend=tiny, on_progress=progress.append)
    assert progress[0]["done"] == 2 and s["this_run"]["new_samples"] == 4
    assert s["items"] == 3 and s["samples"] == 6 and s["mean_tokens"] > 0 and s["tokens_per_s"] > 0
    recs, _ = load_chains(tmp_path / "chains")
    assert {r["seed"] for r in recs} == {0, 1} and all(r["usage"]["thinking"] <= 48 + 1 for r in recs)
    assert all(isinstance(r["correct"], bool) and r["gold"] for r in recs)
