"""Post-training (train sft/rl/export): exact rewards, input validation, and real smoke runs on SmolLM2.

Reward functions are checked on hand-made completions against values worked out by hand.
The slow tests train SmolLM2-135M for a few steps on CPU (the GGUF preset, dequantised once
into the cache by transformers), export it through llama.cpp's converter and run it with
`leanthink solve`; they need the converter (`leanthink train fetch-converter`, once).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from leanthink.errors import ConfigError, DataError
from leanthink.train import rewards as R

from .conftest import DATA_DIR

LEANTHINK = Path(sys.executable).parent / "leanthink"

# -- scalar reward formulas -----------------------------------------------------------------


def test_l1_exact_and_max():
    assert R.l1_exact(True, 300, 200, alpha=0.001) == pytest.approx(0.9)
    assert R.l1_exact(True, 200, 200) == 1.0
    assert R.l1_exact(False, 100, 200, alpha=0.001) == pytest.approx(-0.1)
    assert R.l1_max(True, 300, 200, alpha=0.001, delta=0.5) == pytest.approx(0.4)
    assert R.l1_max(True, 100, 200, alpha=0.001, delta=0.5) == pytest.approx(0.6)
    assert R.l1_max(True, 0, 2000, alpha=0.001, delta=0.5) == 1.0  # clipped above
    assert R.l1_max(True, 1000, 200, alpha=0.001, delta=0.5) == 0.0  # clipped below
    assert R.l1_max(False, 100, 200, alpha=0.001, delta=0.5) == 0.0


def test_shorter_better():
    assert R.shortest_correct_length([True, False, True], [50, 10, 30]) == 30.0
    assert R.shortest_correct_length([False, False], [10, 30]) == 20.0  # no correct: group mean
    assert R.shorter_better(True, 50, 30, alpha=1.0, beta=0.01) == pytest.approx(0.8)
    assert R.shorter_better(False, 10, 30, alpha=1.0, beta=0.01) == pytest.approx(-0.2)
    assert R.shorter_better(True, 30, 30.0) == 1.0


def test_think_prune_cap():
    assert R.think_prune(True, 100, True, cap=100) == 1.0
    assert R.think_prune(True, 101, True, cap=100) == 0.0
    assert R.think_prune(True, 50, False, cap=100) == 0.0  # never closed: over the cap
    assert R.think_prune(False, 10, True, cap=100) == 0.0


def test_kimi_length():
    assert R.kimi_length(True, 10, 10, 30) == 0.5
    assert R.kimi_length(True, 30, 10, 30) == -0.5
    assert R.kimi_length(True, 20, 10, 30) == 0.0
    assert R.kimi_length(False, 10, 10, 30) == 0.0  # wrong answers never gain from being short
    assert R.kimi_length(False, 30, 10, 30) == -0.5
    assert R.kimi_length(True, 17, 17, 17) == 0.0  # one length: no signal


def test_adapt_think():
    assert R.adapt_think(True, thought=False, delta=0.05) == pytest.approx(1.05)
    assert R.adapt_think(True, thought=True, delta=0.05) == 1.0
    assert R.adapt_think(False, thought=False, delta=0.05) == 0.0


# -- TRL-signature reward functions on completions ------------------------------------------

RIGHT = "<think>\n3 + 4 = 7\n</think>\n\nThe answer is \\boxed{7}."
WRONG = "<think>\n3 + 4 = 8\n</think>\n\nThe answer is \\boxed{8}."


def test_split_and_thought():
    assert R.split_think(RIGHT) == ("3 + 4 = 7", "The answer is \\boxed{7}.", True)
    assert R.split_think("still thinking 3 + 4") == ("still thinking 3 + 4", "", False)
    assert R.thought(RIGHT) is True
    assert R.thought("</think>\n\n\\boxed{7}") is False
    assert R.thought("<think></think>\\boxed{7}") is False
    assert R.thought("<think>\nunfinished") is True
    assert R.is_correct(RIGHT, "7") and not R.is_correct(WRONG, "7")
    assert R.is_correct("\\boxed{7.0}", 7)  # the grader's numeric equivalence


def test_emulated_thinking_ends_at_boxed():
    text = "3 + 4 = 7, so the answer is \\boxed{7}."
    assert R.split_think(text, emulated=True) == ("3 + 4 = 7, so the answer is", "\\boxed{7}.", True)
    assert R.thought(text, emulated=True) is True and R.thought("\\boxed{7}", emulated=True) is False
    f = R.make_reward("adapt-think", emulated=True)
    assert f(prompts=["p", "p"], completions=["\\boxed{7}", text], gold=["7", "7"]) == pytest.approx([1.05, 1.0])
    cap = R.make_reward("think-prune(cap=8)", emulated=True)  # "3 + 4 = 7, so the answer is": 9 words
    assert cap(prompts=["p"], completions=[text], gold=["7"]) == [0.0]
    assert R.make_reward("think-prune(cap=9)", emulated=True)(prompts=["p"], completions=[text], gold=["7"]) == [1.0]


def test_correct_reward_conversational():
    f = R.make_reward("correct")
    comps = [[{"role": "assistant", "content": RIGHT}], [{"role": "assistant", "content": WRONG}]]
    assert f(prompts=["p", "p"], completions=comps, gold=["7", "7"]) == [1.0, 0.0]


def test_shorter_better_groups_by_prompt():
    f = R.make_reward("shorter-better(alpha=1, beta=0.01)")
    prompts = ["p1", "p1", "p1", "p2", "p2"]
    comps = [RIGHT, WRONG, RIGHT, WRONG, WRONG]
    ids = [[0] * 10, [0] * 20, [0] * 30, [0] * 10, [0] * 30]
    out = f(prompts=prompts, completions=comps, gold=["7"] * 5, completion_ids=ids)
    # p1: shortest correct = 10; p2: none correct -> mean 20
    assert out == pytest.approx([1.0, -0.1, 0.8, -0.1, -0.1])


def test_kimi_reward_adds_correctness():
    f = R.make_reward("kimi")
    ids = [[0] * 10, [0] * 20, [0] * 30, [0] * 10, [0] * 30]
    out = f(prompts=["a", "a", "a", "b", "b"], completions=[RIGHT, WRONG, RIGHT, WRONG, WRONG],
            gold=["7"] * 5, completion_ids=ids)
    assert out == pytest.approx([1.5, 0.0, 0.5, 0.0, -0.5])


def test_l1_reward_uses_target_column():
    f = R.make_reward("l1-exact(alpha=0.01)")
    out = f(prompts=["p", "p"], completions=[RIGHT, WRONG], gold=["7", "7"], target_len=[12, 12],
            completion_ids=[[0] * 10, [0] * 10])
    assert out == pytest.approx([0.98, -0.02])
    with pytest.raises(ConfigError, match="target_len"):
        f(prompts=["p"], completions=[RIGHT], gold=["7"])


def test_think_prune_counts_thinking_tokens():
    # default count: whitespace words; "3 + 4 = 7" is 5 words
    assert R.make_reward("think-prune(cap=5)")(prompts=["p"], completions=[RIGHT], gold=["7"]) == [1.0]
    assert R.make_reward("think-prune(cap=4)")(prompts=["p"], completions=[RIGHT], gold=["7"]) == [0.0]
    assert R.make_reward("think-prune(cap=99)")(prompts=["p"], completions=["<think>\n3 + 4 = 7 \\boxed{7}"],
                                               gold=["7"]) == [0.0]


def test_adapt_think_reward():
    f = R.make_reward("adapt-think")
    comps = ["</think>\n\nThe answer is \\boxed{7}.", RIGHT, "<think></think>\\boxed{8}"]
    assert f(prompts=["p"] * 3, completions=comps, gold=["7"] * 3) == pytest.approx([1.05, 1.0, 0.0])


@pytest.mark.parametrize("spec,msg", [
    ("nope", "unknown reward"), ("think-prune(cap=0)", "cap must be"), ("kimi(alpha=1)", "has no parameter"),
    ("l1-max(alpha=x)", "must be a number"), ("shorter-better(beta)", "expected key=value"),
    ("l1-exact(alpha=-1)", ">= 0"),
])
def test_bad_reward_specs(spec, msg):
    with pytest.raises(ConfigError, match=msg):
        R.parse_reward_spec(spec)


# -- input validation: one-line errors ------------------------------------------------------


def _example(q="What is 3 + 4?", a="7", weight=1.0) -> dict:
    return {"prompt": [{"role": "user", "content": f"{q}\n\nPlease reason step by step, and put your final answer within \\boxed{{}}."}],
            "completion": [{"role": "assistant", "content": f"<think>\n3 + 4 = {a}\n</think>\n\nThe answer is \\boxed{{{a}}}."}],
            "weight": weight, "meta": {"gold": a}}


def _write(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_load_examples_validates(tmp_path):
    from leanthink.train.sft import load_examples

    rows = load_examples(_write(tmp_path / "ok.jsonl", [_example(), _example(weight=0.5)]))
    assert [r["weight"] for r in rows] == [1.0, 0.5] and set(rows[0]) == {"prompt", "completion", "weight"}
    with pytest.raises(DataError, match="does not exist"):
        load_examples(tmp_path / "missing.jsonl")
    with pytest.raises(DataError, match="line 1: expected fields 'prompt' and 'completion'.*question"):
        load_examples(_write(tmp_path / "a.jsonl", [{"question": "q", "response": "r"}]))
    bad_role = _example()
    bad_role["completion"][0]["role"] = "user"
    with pytest.raises(DataError, match="line 2: the last 'completion' message must have role 'assistant'"):
        load_examples(_write(tmp_path / "b.jsonl", [_example(), bad_role]))
    with pytest.raises(DataError, match="'weight' must be a finite number >= 0"):
        load_examples(_write(tmp_path / "c.jsonl", [_example(weight=-1)]))
    with pytest.raises(DataError, match="not JSON"):
        load_examples(_write(tmp_path / "d.jsonl", ["{oops"]))
    with pytest.raises(DataError, match="no examples"):
        load_examples(_write(tmp_path / "e.jsonl", []))


def _cli(*args):
    from leanthink.cli import app

    return CliRunner().invoke(app, ["train", *args])


@pytest.mark.parametrize("args,msg", [
    (["sft", "MISSING", "--out", "OUT"], "does not exist"),
    (["sft", "DATA", "--out", "OUT", "--lr", "0"], "learning rate must be in (0, 1)"),
    (["sft", "DATA", "--out", "OUT", "--lora-r", "0"], "LoRA r and alpha must be >= 1"),
    (["sft", "DATA", "--out", "OUT", "--epochs", "-1"], "epochs must be > 0"),
    (["sft", "DATA", "--out", "OUT", "--dtype", "int8"], "dtype must be"),
    (["rl", "DATA", "--out", "OUT", "--num-generations", "1"], "num-generations must be >= 2"),
    (["rl", "DATA", "--out", "OUT", "--reward", "longer"], "unknown reward 'longer'"),
    (["rl", "DATA", "--out", "OUT", "--reward", "l1-max", "--target-len", "0"], "target-len values must be >= 1"),
    (["rl", "MISSING", "--out", "OUT"], "does not exist"),
    (["export", "NOPE_DIR"], "does not exist"),
    (["export", "DATA_DIR", "--outtype", "q2"], "outtype must be one of"),
])
def test_cli_bad_input_is_one_line(tmp_path, args, msg):
    data = _write(tmp_path / "d.jsonl", [_example()])
    (tmp_path / "run" / "merged").mkdir(parents=True)
    (tmp_path / "run" / "merged" / "leanthink-complete.json").write_text("{}")
    subst = {"MISSING": str(tmp_path / "missing.jsonl"), "DATA": str(data), "OUT": str(tmp_path / "o"),
             "NOPE_DIR": str(tmp_path / "nope"), "DATA_DIR": str(tmp_path / "run")}
    r = _cli(*[subst.get(a, a) for a in args])
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and msg in lines[0], r.output


def test_model_without_chat_template(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    from leanthink.train.sft import load_model

    tk = tokenizers.Tokenizer(tokenizers.models.WordLevel({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    transformers.PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="a").save_pretrained(tmp_path / "m")
    with pytest.raises(ConfigError, match="has no chat template"):
        load_model(str(tmp_path / "m"))


def test_resume_guard(tmp_path):
    from leanthink.train.sft import train_sft

    (tmp_path / "run" / "checkpoints" / "checkpoint-2").mkdir(parents=True)
    with pytest.raises(ConfigError, match="--resume"):
        train_sft(str(_write(tmp_path / "d.jsonl", [_example()])), "smollm2-135m", str(tmp_path / "run"))


def test_train_commands_registered():
    r = _cli("--help")
    for name in ("sft", "rl", "export", "export-base", "fetch-converter"):
        assert name in r.output


# -- real runs (slow) -------------------------------------------------------------------------


def _gsm8k_rows(n: int) -> list[dict]:
    import re

    rows = []
    with open(DATA_DIR / "gsm8k_train.jsonl") as f:
        for line in f:
            d = json.loads(line)
            sol, ans = d["answer"].split("####")
            sol = re.sub(r"<<[^>]*>>", "", sol).strip()
            rows.append({"prompt": [{"role": "user", "content": d["question"] + "\n\nPlease reason step by step, and put "
                                     "your final answer within \\boxed{}."}],
                         "completion": [{"role": "assistant", "content": f"<think>\n{sol}\n</think>\n\nThe answer is "
                                         f"\\boxed{{{ans.strip()}}}."}], "weight": 1.0, "meta": {"gold": ans.strip()}})
            if len(rows) == n:
                return rows
    return rows


@pytest.mark.slow
def test_sft_lowers_loss_and_exports_a_runnable_gguf(tmp_path):
    from leanthink.train.export import converter_dir, export
    from leanthink.train.sft import SFTOptions, train_sft

    data = _write(tmp_path / "tiny.jsonl", _gsm8k_rows(4))
    opts = SFTOptions(epochs=4, batch_size=4, grad_accum=1, learning_rate=1e-3, max_length=256, save_steps=2,
                      logging_steps=1, threads=1)
    s = train_sft(str(data), "smollm2-135m", str(tmp_path / "run"), opts)
    # step 1 is warmup (lr 0); the same 4 examples each step, so the loss must fall
    assert s["steps"] == 4 and s["loss_end"] < s["loss_start"] * 0.9, s
    assert (tmp_path / "run" / "checkpoints" / "checkpoint-4").is_dir()  # resumable
    assert s["train_tokens"] and s["train_tokens_per_s"] > 0
    assert (tmp_path / "run" / "adapter" / "adapter_config.json").is_file()
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["steps"] == 4
    if not (converter_dir() / "convert_hf_to_gguf.py").is_file():
        pytest.fail("llama.cpp converter missing: run `leanthink train fetch-converter` once")
    e = export(tmp_path / "run", outtype="q8_0")
    gguf = Path(e["gguf"])
    assert gguf.is_file() and (tmp_path / "run" / "merged" / "config.json").is_file()
    r = subprocess.run([str(LEANTHINK), "solve", "What is 3 + 4?", "--model", str(gguf), "--json", "-m", "direct"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout)
    assert res["usage"]["total"] > 0 and isinstance(res.get("answer_text", res.get("answer", "")), (str, type(None)))


@pytest.mark.slow
def test_grpo_two_steps_logs_rewards(tmp_path):
    from leanthink.train.rl import RLOptions, train_rl

    data = _write(tmp_path / "p.jsonl", _gsm8k_rows(2))
    opts = RLOptions(reward="shorter-better", num_generations=2, max_completion=16, max_steps=2, limit=2, threads=1)
    s = train_rl(str(data), "smollm2-135m", str(tmp_path / "rl"), opts)
    assert s["steps"] == 2 and len(s["reward_per_step"]) == 2
    assert all(isinstance(x, float) and math.isfinite(x) for x in s["reward_per_step"])
    assert all(isinstance(x, float) for x in s["length_reward_per_step"])
    assert all(0 < x <= 16 for x in s["completion_length_per_step"])
    assert (tmp_path / "rl" / "adapter" / "adapter_config.json").is_file()


@pytest.mark.slow
def test_weighted_loss_matches_trl_and_scales(tmp_path):
    """O1-Pruner weights: the custom loss equals TRL's own loss at weight 1 and scales with the weight
    (a tiny random Llama with SmolLM2's tokenizer and chat template, so it runs in seconds)."""
    import torch
    import transformers
    import trl

    from leanthink.train.export import hf_model_dir
    from leanthink.train.sft import _WeightCollator, _weighted_trainer_class

    tok = transformers.AutoTokenizer.from_pretrained(hf_model_dir("smollm2-135m"))
    cfg = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                   num_attention_heads=2, num_key_value_heads=2)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg)
    import datasets

    ds = datasets.Dataset.from_list([{k: ex[k] for k in ("prompt", "completion", "weight")} for ex in
                                     [_example(weight=2.0), _example(q="What is 5 + 6?", a="11", weight=0.5)]])
    args = trl.SFTConfig(output_dir=str(tmp_path / "o"), use_cpu=True, bf16=False, report_to="none",
                         completion_only_loss=True, per_device_train_batch_size=2, max_steps=1,
                         gradient_checkpointing=False)
    tr = _weighted_trainer_class()(model=model, args=args, train_dataset=ds, processing_class=tok)
    tr.data_collator = _WeightCollator(tr.data_collator, torch)
    tr._set_signature_columns_if_needed()
    assert "weight" in tr._signature_columns
    rows = [tr.train_dataset[i] for i in range(2)]
    batch = tr.data_collator([dict(r) for r in rows])
    assert batch["weight"].tolist() == [2.0, 0.5]
    model.train(False)
    with torch.no_grad():
        plain = trl.SFTTrainer.compute_loss(tr, model, {k: v for k, v in batch.items() if k != "weight"})
        ones = tr.compute_loss(model, {**batch, "weight": torch.tensor([1.0, 1.0])})
        twos = tr.compute_loss(model, {**batch, "weight": torch.tensor([2.0, 2.0])})
        mixed = tr.compute_loss(model, {**batch, "weight": torch.tensor([1.0, 0.0])})
        first_only = tr.compute_loss(model, {k: (v[:1] if torch.is_tensor(v) else v) for k, v in batch.items()
                                             if k != "weight"})
    assert float(ones) == pytest.approx(float(plain), rel=1e-4)  # weight 1 defers to TRL
    assert float(twos) == pytest.approx(2 * float(plain), rel=1e-4)  # our path == TRL's token mean, scaled
    n0 = int((batch["labels"][0, 1:] != -100).sum())
    n = int((batch["labels"][:, 1:] != -100).sum())
    assert float(mixed) == pytest.approx(float(first_only) * n0 / n, rel=1e-3)  # weight 0 drops example 2
