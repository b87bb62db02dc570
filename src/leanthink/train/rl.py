"""Stage 4: RL with length-aware rewards (TRL `GRPOTrainer` + peft LoRA).

The rewards are the plain functions of `rewards.py`; this module only builds the prompt
dataset, the trainer and a summary. On CPU only smoke-scale runs are feasible: GRPO's cost
is sampling `num_generations` completions per prompt with `transformers.generate`, so
`use_vllm=False` here, and the trainer's bf16 flag stays off (bf16 weights, no autocast; see
`sft.py`). On GPUs the same run scales with accelerate and TRL's vLLM generation:

    accelerate config          # or: accelerate launch --num_processes 8 --mixed_precision bf16
    accelerate launch -m leanthink.cli train rl DATA.jsonl --model ORG/NAME --out runs/rl \\
        --reward "shorter-better" --num-generations 8 --max-completion 2048 --vllm
    # --vllm sets use_vllm=True, vllm_mode="colocate" (vLLM shares the training GPUs);
    # for a separate generation server use `trl vllm-serve --model ORG/NAME` and --vllm-server.

Input rows: the training JSONL of the contract (its `prompt`; gold from `gold` or `meta.gold`;
the `completion` is ignored) or GSM8K-style rows {question, answer} (gold after `####`).
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import ConfigError, DataError, require
from .rewards import make_reward, parse_reward_spec

L1_PROMPTS = {"l1-exact": "Think for {n} tokens.", "l1-max": "Think for maximum {n} tokens."}
"""L1's length instruction, appended to the user turn (the model learns to follow it)."""


@dataclass
class RLOptions:
    reward: str = "shorter-better"
    num_generations: int = 4
    max_completion: int = 256
    max_steps: int = 50
    learning_rate: float = 1e-5
    temperature: float = 1.0
    beta: float = 0.0
    target_len: str = "256"
    """L1 only: comma-separated target lengths, one drawn per prompt."""
    lora_r: int = 16
    lora_alpha: int = 32
    save_steps: int = 25
    seed: int = 0
    dtype: str = "auto"
    threads: int | None = None
    limit: int | None = None
    vllm: bool = False
    vllm_server: bool = False

    def targets(self) -> list[int]:
        try:
            out = [int(x) for x in self.target_len.split(",") if x.strip()]
        except ValueError:
            raise ConfigError(f"target-len must be comma-separated integers, got '{self.target_len}'") from None
        if not out or min(out) < 1:
            raise ConfigError(f"target-len values must be >= 1, got '{self.target_len}'")
        return out

    def validate(self) -> None:
        parse_reward_spec(self.reward)
        checks = [
            (self.num_generations >= 2, f"num-generations must be >= 2 (GRPO compares a group), got {self.num_generations}"),
            (self.max_completion >= 1, f"max-completion must be >= 1, got {self.max_completion}"),
            (self.max_steps >= 1, f"max-steps must be >= 1, got {self.max_steps}"),
            (0 < self.learning_rate < 1, f"learning rate must be in (0, 1), got {self.learning_rate}"),
            (0 < self.temperature <= 5 and math.isfinite(self.temperature), f"temperature must be in (0, 5], got {self.temperature}"),
            (self.beta >= 0, f"beta must be >= 0, got {self.beta}"),
            (self.limit is None or self.limit >= 1, f"limit must be >= 1, got {self.limit}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)
        self.targets()


def load_prompts(path: str | Path, opts: RLOptions) -> list[dict]:
    """Rows {prompt, gold[, target_len]} for GRPO; see the module docstring for accepted inputs."""
    from ..grading import gsm8k_gold
    from ..reasoning import ANSWER_INSTRUCTION

    p = Path(path)
    if not p.is_file():
        raise DataError(f"prompt data '{path}' does not exist")
    name, _ = parse_reward_spec(opts.reward)
    rng, targets = random.Random(opts.seed), opts.targets()
    rows = []
    with p.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                ex = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{p.name} line {n}: not JSON ({exc.msg})") from None
            if isinstance(ex, dict) and isinstance(ex.get("prompt"), list):
                prompt = [dict(m) for m in ex["prompt"]]
                gold = ex.get("gold", (ex.get("meta") or {}).get("gold"))
            elif isinstance(ex, dict) and "question" in ex and "answer" in ex:
                prompt = [{"role": "user", "content": f"{ex['question']}\n\n{ANSWER_INSTRUCTION}"}]
                gold = gsm8k_gold(str(ex["answer"])) if "####" in str(ex["answer"]) else ex["answer"]
            else:
                keys = ", ".join(sorted(ex)) if isinstance(ex, dict) else type(ex).__name__
                raise DataError(f"{p.name} line {n}: expected 'prompt' (+ 'gold' or meta.gold) or 'question'/'answer', got {keys}")
            if gold is None or not prompt or prompt[-1].get("role") != "user":
                raise DataError(f"{p.name} line {n}: needs a gold answer and a prompt ending with a user message")
            row = {"prompt": prompt, "gold": str(gold)}
            if name in L1_PROMPTS:
                t = rng.choice(targets)
                prompt[-1]["content"] = f"{prompt[-1]['content']}\n\n{L1_PROMPTS[name].format(n=t)}"
                row["target_len"] = t
            rows.append(row)
            if opts.limit and len(rows) >= opts.limit:
                break
    if not rows:
        raise DataError(f"prompt data '{path}' has no rows")
    return rows


def _rewards(opts: RLOptions, count, emulated: bool) -> tuple[list, list[float]]:
    """(reward functions, weights): the chosen reward, plus correctness at weight 0 so it is logged."""
    funcs, weights = [make_reward(opts.reward, count, emulated=emulated)], [1.0]
    if parse_reward_spec(opts.reward)[0] != "correct":
        funcs.append(make_reward("correct", count, emulated=emulated))
        weights.append(0.0)  # logged (rewards/correct/mean), not optimised
    return funcs, weights


def _grpo_config(trl, opts: RLOptions, ckpt_dir: Path, weights: list[float], on_gpu: bool, bf16: bool):
    vllm_kw = {}
    if opts.vllm or opts.vllm_server:
        vllm_kw = {"use_vllm": True, "vllm_mode": "server" if opts.vllm_server else "colocate"}
    return trl.GRPOConfig(
        output_dir=str(ckpt_dir), max_steps=opts.max_steps, learning_rate=opts.learning_rate,
        per_device_train_batch_size=opts.num_generations, num_generations=opts.num_generations,
        max_completion_length=opts.max_completion, temperature=opts.temperature, beta=opts.beta,
        reward_weights=weights, logging_steps=1, save_steps=opts.save_steps, seed=opts.seed,
        use_cpu=not on_gpu, bf16=bf16, fp16=False, report_to="none",
        disable_tqdm=True, gradient_checkpointing=False, use_vllm=False, **vllm_kw,
    )


def train_rl(data: str, model: str, out: str, opts: RLOptions | None = None, *, resume: bool = False,
             log=print) -> dict:
    """GRPO on `data` with `opts.reward` (+ correctness logged at weight 0); writes adapter/ and summary.json."""
    opts = opts or RLOptions()
    opts.validate()
    rows = load_prompts(data, opts)
    trl = require("trl", "train", "leanthink train rl")
    peft = require("peft", "train", "LoRA training")
    datasets = require("datasets", "train", "leanthink train rl")
    torch = require("torch", "train", "leanthink train rl")
    from ..reasoning import family_for
    from .sft import load_model, prepare_out

    if opts.threads:
        torch.set_num_threads(opts.threads)
    out_dir, ckpt_dir, has_ckpt = prepare_out(out, resume)
    m, tok, src = load_model(model, opts.dtype, log=log)
    on_gpu = torch.cuda.is_available()

    def count(text: str) -> int:
        return len(tok(text, add_special_tokens=False)["input_ids"]) if text else 0

    emulated = family_for(f"{model} {src}").emulated  # Qwen2.5/SmolLM2: thinking = text before \\boxed{
    funcs, weights = _rewards(opts, count, emulated)
    cfg = _grpo_config(trl, opts, ckpt_dir, weights, on_gpu, on_gpu and m.dtype == torch.bfloat16)
    lora = peft.LoraConfig(r=opts.lora_r, lora_alpha=opts.lora_alpha, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = trl.GRPOTrainer(model=m, reward_funcs=funcs, args=cfg, train_dataset=datasets.Dataset.from_list(rows),
                              processing_class=tok, peft_config=lora)
    log(f"GRPO: {len(rows)} prompts, reward {opts.reward}, {opts.num_generations} samples/prompt, "
        f"{opts.max_steps} steps on {'GPU' if on_gpu else 'CPU'}")
    t0 = time.time()
    trainer.train(resume_from_checkpoint=True if (resume and has_ckpt) else None)
    wall = time.time() - t0
    final = out_dir / "adapter"
    trainer.save_model(str(final))
    tok.save_pretrained(str(final))
    hist = [h for h in trainer.state.log_history if "reward" in h]
    key = f"rewards/{funcs[0].__name__}/mean"
    summary = {
        "stage": "rl", "data": str(Path(data).resolve()), "model": model, "base_hf": src, "prompts": len(rows),
        "steps": trainer.state.global_step, "wall_s": round(wall, 1),
        "reward_per_step": [h.get("reward") for h in hist], "length_reward_per_step": [h.get(key) for h in hist],
        "correct_per_step": [h.get("rewards/correct/mean") for h in hist],
        "completion_length_per_step": [h.get("completions/mean_length") for h in hist],
        "output": str(final), "options": asdict(opts), "device": "cuda" if on_gpu else "cpu",
        "emulated_thinking": emulated,
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    log(f"done: {summary['steps']} steps in {wall:.0f}s; reward per step {summary['reward_per_step']}")
    return summary
