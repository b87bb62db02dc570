"""`leanthink train latent RECIPE`: one resumable training loop for every recipe.

Why a loop of our own and not TRL's trainers: Coconut and CODI feed hidden states back as
inputs through a KV cache, LightThinker needs a 4D attention mask per example, SoftCoT
trains a module outside the model; none fits `SFTTrainer`. The loop is small:

  * the batch of step s is a pure function of (seed, s), so a resumed run sees exactly the
    batches the interrupted one would have seen;
  * every `save_every` steps the trainable weights, optimizer and counters go to OUT/state/
    (written to a temporary name, then renamed); `--resume` continues from there;
  * progress (step, stage, loss, tokens/s, ETA) goes to stderr and OUT/progress.jsonl;
  * the end writes the checkpoint (checkpoint.py) with `latent.json`: recipe, base model,
    task, hyper-parameters, training time and throughput.

CPU: weights in fp32 (bf16 only where the CPU computes it natively, as `train sft` decides),
no autocast. GPU: bf16 weights.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import ConfigError, require
from . import RECIPES
from .checkpoint import add_tokens, new_tokens, read_meta, save_checkpoint
from .task import parse_task, train_examples


@dataclass
class LatentOptions:
    task: str = "chain"
    n_train: int = 2000
    steps: int = 200
    """Optimizer steps in all (Coconut splits them evenly over its stages)."""
    batch_size: int = 8
    lr: float = 1e-4
    proj_lr: float = 1e-3
    """Learning rate of the projections (CODI, SoftCoT): new modules learn faster."""
    lora_r: int = 0
    """0: train all weights (the default for small models); >0: a LoRA adapter, merged at the end."""
    n_gist: int = 2
    thoughts_per_step: int = 1
    max_stage: int | None = None
    """Coconut: last stage (default: the number of steps, i.e. every step latent)."""
    first_stage: int = 0
    """Coconut: first stage (1 when starting from a CoT-trained checkpoint, as the reference does)."""
    n_latent: int | None = None
    """CODI: continuous thoughts (default: steps x thoughts_per_step)."""
    distill_weight: float = 1.0
    n_soft: int = 4
    """SoftCoT: soft thoughts."""
    assistant: str | None = None
    """SoftCoT: the frozen assistant model (default: the main model)."""
    save_every: int = 50
    log_every: int = 5
    seed: int = 0
    dtype: str = "auto"
    threads: int | None = None
    device: str | None = None

    def validate(self, recipe: str) -> None:
        checks = [
            (recipe in RECIPES, f"unknown recipe '{recipe}'; known: {', '.join(RECIPES)}"),
            (self.n_train >= 1 and self.steps >= 1 and self.batch_size >= 1, "n-train, steps and batch-size must be >= 1"),
            (0 < self.lr < 1 and 0 < self.proj_lr < 1, "learning rates must be in (0, 1)"),
            (self.lora_r >= 0, "lora-r must be >= 0"),
            (self.n_gist >= 1 and self.thoughts_per_step >= 1 and self.n_soft >= 1, "n-gist, thoughts-per-step and n-soft must be >= 1"),
            (self.first_stage >= 0 and (self.max_stage is None or self.max_stage >= self.first_stage), "need 0 <= first-stage <= max-stage"),
            (self.n_latent is None or self.n_latent >= 1, "n-latent must be >= 1"),
            (self.save_every >= 1 and self.log_every >= 1, "save-every and log-every must be >= 1"),
            (self.dtype in ("auto", "float32", "bfloat16", "float16"), f"dtype must be auto, float32, bfloat16 or float16, got '{self.dtype}'"),
            (not (recipe == "softcot" and self.lora_r), "softcot trains only its projection: drop --lora-r"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)
        parse_task(self.task)


def load_for_training(model: str, dtype_name: str, device: str | None, *, log=print):
    """(model, tokenizer, HF source) in the training dtype; presets/GGUF are dequantised once
    into the cache (the same path `train sft` uses)."""
    transformers = require("transformers", "train", "latent training")
    torch = require("torch", "train", "latent training")
    from ..train.export import hf_model_dir
    from ..train.sft import pick_dtype

    src = hf_model_dir(model, log=log)
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        tok = transformers.AutoTokenizer.from_pretrained(src)
        m = transformers.AutoModelForCausalLM.from_pretrained(src, dtype=pick_dtype(torch, dtype_name)).to(dev)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load model '{model}': {str(exc).splitlines()[0]}") from exc
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return m, tok, src


def batch_for(step: int, examples: list, batch_size: int, seed: int) -> list:
    """The examples of optimizer step `step`: epoch-wise seeded permutations, so a resumed run
    sees the same batches."""
    n = len(examples)
    out, perms = [], {}
    for i in range(step * batch_size, (step + 1) * batch_size):
        epoch = i // n
        if epoch not in perms:
            perm = list(range(n))
            random.Random(f"{seed}:{epoch}").shuffle(perm)
            perms[epoch] = perm
        out.append(examples[perms[epoch][i % n]])
    return out


def _apply_lora(model, opts: LatentOptions, token_ids: list[int]):
    peft = require("peft", "train", "LoRA training")
    kw = {"trainable_token_indices": {"embed_tokens": token_ids}} if token_ids else {}
    cfg = peft.LoraConfig(r=opts.lora_r, lora_alpha=2 * opts.lora_r, target_modules="all-linear",
                          lora_dropout=0.0, task_type="CAUSAL_LM", **kw)
    return peft.get_peft_model(model, cfg)


def _optimizer(torch, recipe, opts: LatentOptions):
    proj = set(map(id, recipe.projection.parameters())) if recipe.projection is not None else set()
    groups = [{"params": [p for p in recipe.trainable() if id(p) not in proj], "lr": opts.lr},
              {"params": [p for p in recipe.trainable() if id(p) in proj], "lr": opts.proj_lr}]
    return torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=0.0)


def _trainable_state(recipe) -> dict:
    names = {id(p): n for n, p in recipe.model.named_parameters()}
    state = {f"model.{names[id(p)]}": p.detach().cpu() for p in recipe.trainable() if id(p) in names}
    if recipe.projection is not None:
        state.update({f"projection.{k}": v.cpu() for k, v in recipe.projection.state_dict().items()})
    return state


def _save_state(torch, out: Path, recipe, optim, info: dict) -> None:
    tmp, final = out / "state.tmp", out / "state"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save(_trainable_state(recipe), tmp / "trainable.pt")
    torch.save(optim.state_dict(), tmp / "optim.pt")
    (tmp / "state.json").write_text(json.dumps(info))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)


def _load_state(torch, out: Path, recipe, optim) -> dict:
    d = out / "state"
    state = torch.load(d / "trainable.pt", map_location="cpu")
    params = dict(recipe.model.named_parameters())
    with torch.no_grad():
        for k, v in state.items():
            if k.startswith("model."):
                params[k[len("model."):]].copy_(v)
    if recipe.projection is not None:
        recipe.projection.load_state_dict({k[len("projection."):]: v for k, v in state.items() if k.startswith("projection.")})
    optim.load_state_dict(torch.load(d / "optim.pt", map_location="cpu"))
    return json.loads((d / "state.json").read_text())


def _prepare(recipe_name: str, model: str, opts: LatentOptions, log):
    """Load the model(s), add the recipe's tokens, wrap in LoRA if asked: the Recipe object."""
    from .recipes import build

    task = parse_task(opts.task)
    m, tok, src = load_for_training(model, opts.dtype, opts.device, log=log)
    ids = add_tokens(tok, m, new_tokens(recipe_name, opts.n_gist))
    assistant = None
    if recipe_name == "softcot":
        am, atok, _ = load_for_training(opts.assistant or model, opts.dtype, opts.device, log=log)
        assistant = (am, atok)
    if opts.lora_r:
        m = _apply_lora(m, opts, ids)
    m.train()
    recipe = build(recipe_name, m, tok, opts, n_steps=task.n_steps, assistant=assistant)
    return recipe, task, src


def _log_line(log, out: Path, rec: dict) -> None:
    log(f"step {rec['step']}/{rec['steps']}  stage {rec['stage']}  loss {rec['loss']:.4f}  "
        f"{rec['tokens_per_s']:.0f} tok/s  {rec['elapsed_s']:.0f}s elapsed  eta {rec['eta_s']:.0f}s")
    with (out / "progress.jsonl").open("a") as fh:
        fh.write(json.dumps(rec) + "\n")


def _loop(torch, recipe, examples, opts: LatentOptions, out: Path, state: dict, optim, log) -> dict:
    """Train from `state['step']` to `opts.steps`; returns the updated counters."""
    t_start, tokens0, step0 = time.time(), state["tokens"], state["step"]
    stage = state.get("stage")
    for step in range(state["step"], opts.steps):
        new_stage = recipe.stage_for(step, opts.steps)
        if stage is not None and new_stage != stage:
            optim = _optimizer(torch, recipe, opts)  # Coconut resets the optimizer at every stage
            log(f"stage {new_stage}: optimizer reset")
        stage = new_stage
        loss, n_tok, parts = recipe.loss(batch_for(step, examples, opts.batch_size, opts.seed), stage)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise ConfigError(f"loss is {value} at step {step}; lower --lr")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(recipe.trainable(), 1.0)
        optim.step()
        optim.zero_grad(set_to_none=True)
        state.update(step=step + 1, stage=stage, tokens=state["tokens"] + n_tok)
        state["losses"].append(round(value, 5))
        elapsed = time.time() - t_start
        if (step + 1) % opts.log_every == 0 or step + 1 == opts.steps:
            done = step + 1 - step0
            _log_line(log, out, {"step": step + 1, "steps": opts.steps, "stage": stage, "loss": value, **parts,
                                 "tokens_per_s": (state["tokens"] - tokens0) / max(elapsed, 1e-9),
                                 "elapsed_s": round(state["train_s"] + elapsed, 1),
                                 "eta_s": elapsed / done * (opts.steps - step - 1)})
        if (step + 1) % opts.save_every == 0 and step + 1 < opts.steps:
            _save_state(torch, out, recipe, optim, {**state, "train_s": state["train_s"] + elapsed})
    state["train_s"] += time.time() - t_start
    state["run_tokens"] = state["tokens"] - tokens0
    state["run_s"] = time.time() - t_start
    return state


def _finish(recipe, recipe_name: str, model: str, src: str, task, opts: LatentOptions, state: dict, out: Path,
            load_s: float) -> dict:
    torch = require("torch", "train", "latent training")
    m = recipe.model
    if opts.lora_r:
        m = m.merge_and_unload()
    losses = state["losses"]
    k = max(1, min(5, len(losses) // 4 or 1))
    meta = {
        "recipe": recipe_name, "base_model": model, "base_hf": src, "task": task.spec,
        "n_train": opts.n_train, "steps": state["step"], "options": asdict(opts),
        "train_s": round(state["train_s"], 1), "model_load_s": round(load_s, 1), "train_tokens": state["tokens"],
        "tokens_per_s": round(state["run_tokens"] / state["run_s"], 1) if state["run_s"] > 0 else None,
        "loss_first": round(sum(losses[:k]) / k, 4), "loss_last": round(sum(losses[-k:]) / k, 4),
        "device": str(m.device), "dtype": str(m.dtype).replace("torch.", ""), "threads": torch.get_num_threads(),
        "prompt_format": "Q: {question}\\nA:\\n", "inference": recipe.inference_meta(),
    }
    save_checkpoint(out, m, recipe.tok, meta, projection=recipe.projection,
                    assistant=(recipe.amodel, recipe.atok) if recipe_name == "softcot" else None)
    shutil.rmtree(out / "state", ignore_errors=True)
    return meta


def train_latent(recipe_name: str, model: str, out: str, opts: LatentOptions | None = None, *,
                 resume: bool = False, log=print) -> dict:
    """Train `recipe_name` on `model` into the checkpoint directory `out`; returns its metadata."""
    opts = opts or LatentOptions()
    opts.validate(recipe_name)
    out_dir = Path(out)
    if read_meta(out_dir) is not None:
        raise ConfigError(f"'{out}' already holds a finished checkpoint; choose another --out")
    has_state = (out_dir / "state" / "state.json").is_file()
    if has_state and not resume:
        raise ConfigError(f"'{out}' holds an unfinished run: pass --resume to continue it, or choose another --out")
    torch = require("torch", "train", "latent training")
    if opts.threads:
        torch.set_num_threads(opts.threads)
    torch.manual_seed(opts.seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    recipe, task, src = _prepare(recipe_name, model, opts, log)
    load_s = time.time() - t0
    examples = train_examples(task, opts.n_train, opts.seed)
    optim = _optimizer(torch, recipe, opts)
    state = {"step": 0, "stage": None, "tokens": 0, "train_s": 0.0, "losses": []}
    if has_state:
        state = _load_state(torch, out_dir, recipe, optim)
        log(f"resuming at step {state['step']}/{opts.steps}")
    log(f"{recipe_name}: {len(examples)} examples of {task.spec}, {opts.steps} steps x {opts.batch_size}, "
        f"{sum(p.numel() for p in recipe.trainable()):,} trainable parameters on {recipe.model.device}")
    state = _loop(torch, recipe, examples, opts, out_dir, state, optim, log)
    meta = _finish(recipe, recipe_name, model, src, task, opts, state, out_dir, load_s)
    log(f"done: loss {meta['loss_first']} -> {meta['loss_last']}, {meta['train_s']}s, {meta['tokens_per_s']} tok/s; "
        f"checkpoint in {out_dir}")
    return meta
