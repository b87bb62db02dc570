"""Stage 3: supervised fine-tuning on compressed chains (TRL `SFTTrainer` + peft LoRA).

Why these choices:
  * The data is TRL's conversational prompt/completion format, so `completion_only_loss`
    puts the loss on the assistant turn only and the model's own chat template renders
    both (the prompt was built with leanthink's prompt builder, so inference sees the same).
  * O1-Pruner's length-harmonising weights need a per-example weight on the loss; TRL has
    no such option, so `WeightedSFTTrainer` overrides `compute_loss` for batches that carry
    a non-uniform `weight` (the same token-mean NLL TRL computes, each example's tokens
    scaled by its weight) and defers to TRL otherwise.
  * CPU: weights are loaded in the chosen dtype directly and the trainer's `bf16`/`fp16`
    flags stay off, because those flags turn on autocast, which on CPU is slower than
    running the weights as they are; LoRA parameters stay in fp32 (peft's default).
    `--dtype auto` picks bf16 only where the CPU computes it natively (AVX512-BF16/AMX);
    on AVX2-only CPUs bf16 is emulated (13x slower than fp32 in a measured
    forward+backward), so auto means fp32 there. On a GPU: bf16 mixed precision.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import ConfigError, DataError, require

_ROLES = {"system", "user", "assistant"}


@dataclass
class SFTOptions:
    epochs: float = 1.0
    max_steps: int = -1
    learning_rate: float = 2e-4
    batch_size: int = 1
    grad_accum: int = 4
    max_length: int = 1024
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    full: bool = False
    """Train all weights instead of a LoRA adapter."""
    save_steps: int = 25
    logging_steps: int = 1
    seed: int = 0
    dtype: str = "auto"
    threads: int | None = None
    limit: int | None = None
    """Train on the first N examples only."""
    gradient_checkpointing: bool = False

    def validate(self) -> None:
        checks = [
            (self.epochs > 0 and math.isfinite(self.epochs), f"epochs must be > 0, got {self.epochs}"),
            (self.max_steps == -1 or self.max_steps > 0, f"max-steps must be a positive integer or -1, got {self.max_steps}"),
            (0 < self.learning_rate < 1, f"learning rate must be in (0, 1), got {self.learning_rate}"),
            (self.batch_size >= 1, f"batch size must be >= 1, got {self.batch_size}"),
            (self.grad_accum >= 1, f"grad-accum must be >= 1, got {self.grad_accum}"),
            (self.max_length >= 16, f"max-length must be >= 16 tokens, got {self.max_length}"),
            (self.lora_r >= 1 and self.lora_alpha >= 1, f"LoRA r and alpha must be >= 1, got r={self.lora_r}, alpha={self.lora_alpha}"),
            (0 <= self.lora_dropout < 1, f"LoRA dropout must be in [0, 1), got {self.lora_dropout}"),
            (self.save_steps >= 1 and self.logging_steps >= 1, "save-steps and logging-steps must be >= 1"),
            (self.dtype in ("auto", "bfloat16", "float32", "float16"), f"dtype must be auto, bfloat16, float32 or float16, got '{self.dtype}'"),
            (self.threads is None or self.threads >= 1, f"threads must be >= 1, got {self.threads}"),
            (self.limit is None or self.limit >= 1, f"limit must be >= 1, got {self.limit}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)


def _check_messages(msgs, where: str, field: str, last_role: str | None) -> None:
    if not isinstance(msgs, list) or not msgs:
        raise DataError(f"{where}: '{field}' must be a non-empty list of {{role, content}} messages")
    for m in msgs:
        if not isinstance(m, dict) or m.get("role") not in _ROLES or not isinstance(m.get("content"), str):
            raise DataError(f"{where}: each '{field}' message needs a role (system/user/assistant) and a string content")
    if last_role and msgs[-1]["role"] != last_role:
        raise DataError(f"{where}: the last '{field}' message must have role '{last_role}'")


def load_examples(path: str | Path, limit: int | None = None) -> list[dict]:
    """Read and validate the training JSONL (contract in the train package docs) -> prompt/completion/weight rows."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"training data '{path}' does not exist")
    rows: list[dict] = []
    with p.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{p.name} line {n}"
            try:
                ex = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{where}: not JSON ({exc.msg})") from None
            if not isinstance(ex, dict) or "prompt" not in ex or "completion" not in ex:
                keys = ", ".join(sorted(ex)) if isinstance(ex, dict) else type(ex).__name__
                raise DataError(f"{where}: expected fields 'prompt' and 'completion' (conversational), got {keys}")
            _check_messages(ex["prompt"], where, "prompt", "user")
            _check_messages(ex["completion"], where, "completion", "assistant")
            w = ex.get("weight", 1.0)
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
                raise DataError(f"{where}: 'weight' must be a finite number >= 0, got {w!r}")
            rows.append({"prompt": ex["prompt"], "completion": ex["completion"], "weight": float(w)})
            if limit and len(rows) >= limit:
                break
    if not rows:
        raise DataError(f"training data '{path}' has no examples")
    return rows


def cpu_has_fast_bf16(torch) -> bool:
    """AVX512-BF16/AMX: oneDNN runs bf16 matmuls natively. Without them (AVX2-only CPUs) bf16 is
    emulated and measured 13x slower than fp32 for a forward+backward here, so fp32 wins."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def pick_dtype(torch, name: str):
    """`auto`: bf16 on a GPU that has it or a CPU with native bf16, else fp32 (module docstring)."""
    if name != "auto":
        return getattr(torch, name)
    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if cpu_has_fast_bf16(torch) else torch.float32


def load_model(model: str, dtype_name: str = "auto", *, log=print):
    """(model, tokenizer, hf source) for training; refuses a tokenizer without a chat template."""
    transformers = require("transformers", "train", "training")
    torch = require("torch", "train", "training")
    from .export import hf_model_dir

    src = hf_model_dir(model, log=log)
    try:
        tok = transformers.AutoTokenizer.from_pretrained(src)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load a tokenizer for '{model}': {str(exc).splitlines()[0]}") from exc
    if not tok.chat_template:
        raise ConfigError(f"model '{model}' has no chat template; training uses the model's chat template "
                          "(give an instruct/chat model, or add chat_template to its tokenizer_config.json)")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    dtype = pick_dtype(torch, dtype_name)
    try:
        m = transformers.AutoModelForCausalLM.from_pretrained(src, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load model '{model}': {str(exc).splitlines()[0]}") from exc
    return m, tok, src


def _weighted_trainer_class():
    trl = require("trl", "train", "leanthink train sft")
    torch = require("torch", "train", "leanthink train sft")

    class WeightedSFTTrainer(trl.SFTTrainer):
        """SFTTrainer whose examples may carry a loss weight (O1-Pruner); see the module docstring."""

        def _set_signature_columns_if_needed(self):
            super()._set_signature_columns_if_needed()
            if self._signature_columns is not None and "weight" not in self._signature_columns:
                self._signature_columns = [*self._signature_columns, "weight"]

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            w = inputs.pop("weight", None)
            if w is None or bool(torch.all(w == 1)):
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            inputs["use_cache"] = False
            labels = inputs.pop("labels")
            logits = model(**inputs).logits[:, :-1].float()
            target = labels[:, 1:]
            mask = target != -100
            logp = torch.log_softmax(logits, dim=-1).gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
            per_token = -logp * mask * w.to(logp.dtype)[:, None]
            n = mask.sum() if num_items_in_batch is None else num_items_in_batch
            loss = per_token.sum() / torch.as_tensor(n).clamp(min=1)
            return (loss, None) if return_outputs else loss

    return WeightedSFTTrainer


class _WeightCollator:
    """Wraps TRL's collator: takes `weight` out of each example and returns it as a tensor."""

    def __init__(self, inner, torch):
        self.inner, self.torch = inner, torch

    def __call__(self, examples):
        ws = [float(ex.pop("weight", 1.0)) for ex in examples]
        batch = self.inner(examples)
        batch["weight"] = self.torch.tensor(ws)
        return batch


def _progress_callback(log, out: Path):
    transformers = require("transformers", "train", "training")

    class Progress(transformers.TrainerCallback):
        """One line per logging step (step/total, loss, tokens/s, ETA), mirrored to progress.jsonl."""

        def on_train_begin(self, args, state, control, **kw):
            self.t0, self.step0 = time.time(), state.global_step

        def on_log(self, args, state, control, logs=None, **kw):
            logs = logs or {}
            if "loss" not in logs:
                return
            dt = time.time() - self.t0
            done = max(state.global_step - self.step0, 1)
            eta = dt / done * max(state.max_steps - state.global_step, 0)
            tps = logs.get("num_tokens", 0) / dt if dt else 0
            log(f"step {state.global_step}/{state.max_steps}  loss {logs['loss']:.4f}  "
                f"{dt:.0f}s elapsed  eta {eta:.0f}s")
            with (out / "progress.jsonl").open("a") as f:
                f.write(json.dumps({"step": state.global_step, "max_steps": state.max_steps, "elapsed_s": round(dt, 1),
                                    "tokens_per_s_cum": round(tps, 1), **logs}) + "\n")

    return Progress()


def prepare_out(out: str, resume: bool) -> tuple[Path, Path, bool]:
    """(output dir, its checkpoints dir, whether a checkpoint exists); refuses to mix runs without `resume`."""
    out_dir = Path(out)
    ckpt_dir = out_dir / "checkpoints"
    has_ckpt = any(ckpt_dir.glob("checkpoint-*"))
    if has_ckpt and not resume:
        raise ConfigError(f"'{out_dir}' already has checkpoints: pass --resume to continue, or choose another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir, ckpt_dir, has_ckpt


def _sft_trainer(trl, peft, torch, opts: SFTOptions, ds, m, tok, out_dir: Path, ckpt_dir: Path, weighted: bool,
                 log):
    """TRL's SFTTrainer set up from `opts` (the weighted subclass and collator when examples carry weights)."""
    on_gpu = torch.cuda.is_available()
    cfg = trl.SFTConfig(
        output_dir=str(ckpt_dir), num_train_epochs=opts.epochs, max_steps=opts.max_steps,
        learning_rate=opts.learning_rate, per_device_train_batch_size=opts.batch_size,
        gradient_accumulation_steps=opts.grad_accum, max_length=opts.max_length, completion_only_loss=True,
        logging_steps=opts.logging_steps, save_steps=opts.save_steps, save_total_limit=2, seed=opts.seed,
        use_cpu=not on_gpu, bf16=on_gpu and m.dtype == torch.bfloat16, fp16=False,
        gradient_checkpointing=opts.gradient_checkpointing, report_to="none", disable_tqdm=True,
        lr_scheduler_type="cosine", warmup_steps=0.05, remove_unused_columns=True,
        dataloader_num_workers=0,
    )
    peft_config = None if opts.full else peft.LoraConfig(
        r=opts.lora_r, lora_alpha=opts.lora_alpha, lora_dropout=opts.lora_dropout, target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    trainer_cls = _weighted_trainer_class() if weighted else trl.SFTTrainer
    trainer = trainer_cls(model=m, args=cfg, train_dataset=ds, processing_class=tok, peft_config=peft_config,
                          callbacks=[_progress_callback(log, out_dir)])
    if weighted:
        trainer.data_collator = _WeightCollator(trainer.data_collator, torch)
    return trainer


def train_sft(data: str, model: str, out: str, opts: SFTOptions | None = None, *, resume: bool = False,
              log=print) -> dict:
    """Fine-tune `model` on `data` into `out` (adapter/, checkpoints/, summary.json); returns the summary."""
    opts = opts or SFTOptions()
    opts.validate()
    rows = load_examples(data, opts.limit)
    trl = require("trl", "train", "leanthink train sft")
    peft = require("peft", "train", "LoRA training")
    datasets = require("datasets", "train", "leanthink train sft")
    torch = require("torch", "train", "leanthink train sft")
    if opts.threads:
        torch.set_num_threads(opts.threads)
    out_dir, ckpt_dir, has_ckpt = prepare_out(out, resume)
    t_load = time.time()
    m, tok, src = load_model(model, opts.dtype, log=log)
    load_s = time.time() - t_load
    on_gpu = torch.cuda.is_available()
    weighted = any(r["weight"] != 1.0 for r in rows)
    ds = datasets.Dataset.from_list(rows if weighted else [{k: r[k] for k in ("prompt", "completion")} for r in rows])
    trainer = _sft_trainer(trl, peft, torch, opts, ds, m, tok, out_dir, ckpt_dir, weighted, log)
    log(f"training {len(rows)} examples{' (weighted)' if weighted else ''} on {'GPU' if on_gpu else 'CPU'}, "
        f"dtype {m.dtype}, {'full' if opts.full else f'LoRA r={opts.lora_r}'}; {trainer.state.max_steps or '?'} steps")
    resumed = bool(resume and has_ckpt)
    t0 = time.time()
    result = trainer.train(resume_from_checkpoint=True if resumed else None)
    wall = time.time() - t0
    final = out_dir / ("model" if opts.full else "adapter")
    trainer.save_model(str(final))
    tok.save_pretrained(str(final))
    hist = trainer.state.log_history
    losses = [h["loss"] for h in hist if "loss" in h]
    tokens = next((h["num_tokens"] for h in reversed(hist) if "num_tokens" in h), None)
    summary = {
        "stage": "sft", "data": str(Path(data).resolve()), "model": model, "base_hf": src, "examples": len(rows),
        "weighted": weighted, "steps": trainer.state.global_step, "loss_start": losses[0] if losses else None,
        "loss_end": losses[-1] if losses else None, "train_tokens": tokens,
        "train_tokens_per_s": round(tokens / wall, 1) if tokens and wall and not resumed else None,
        "wall_s": round(wall, 1), "model_load_s": round(load_s, 1), "dtype": str(m.dtype).replace("torch.", ""),
        "device": "cuda" if on_gpu else "cpu", "threads": torch.get_num_threads(), "resumed": resumed,
        "output": str(final), "options": asdict(opts), "train_metrics": result.metrics,
        "run_tokens": result.metrics.get("train_num_tokens") or tokens,
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    log(f"done: {summary['steps']} steps, loss {summary['loss_start']} -> {summary['loss_end']}, "
        f"{summary['train_tokens_per_s']} train tokens/s; adapter in {final}")
    return summary
