"""`leanthink train ...`: the post-training commands.

Imported by `leanthink.cli` on every start (to register the sub-app), so this module stays
light: typer signatures only; torch/trl/peft/datasets are imported inside the commands.
"""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer

from ..errors import LeanthinkError

app = typer.Typer(help="Post-training for concise reasoning: collect, compress, sft, rl, export; latent reasoning recipes.",
                  no_args_is_help=True, pretty_exceptions_enable=False)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _fail(exc: Exception) -> None:
    print(f"error: {exc}", file=sys.stderr)
    raise typer.Exit(2)


def _run(fn, *args, **kwargs):
    """Run a stage: LeanthinkError -> one line + exit 2; Ctrl-C -> how to resume."""
    try:
        return fn(*args, **kwargs)
    except LeanthinkError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        print("interrupted: rerun the same command with --resume to continue from the last checkpoint",
              file=sys.stderr)
        raise typer.Exit(130)


@app.command("sft")
def sft_command(
    data: str = typer.Argument(..., help="Training JSONL (prompt/completion conversational, optional weight)."),
    model: str = typer.Option("qwen2.5-coder-0.5b", "--model", help="Preset, .gguf file, local HF dir or hub id."),
    out: str = typer.Option(..., "--out", "-o", help="Run directory: adapter/, checkpoints/, summary.json."),
    epochs: float = typer.Option(1.0, "--epochs"),
    max_steps: int = typer.Option(-1, "--max-steps", help="Stop after N optimizer steps (-1: by epochs)."),
    lr: float = typer.Option(2e-4, "--lr", help="Learning rate (LoRA)."),
    batch_size: int = typer.Option(1, "--batch-size"),
    grad_accum: int = typer.Option(4, "--grad-accum"),
    max_length: int = typer.Option(1024, "--max-length", help="Truncate examples to this many tokens."),
    lora_r: int = typer.Option(16, "--lora-r"),
    lora_alpha: int = typer.Option(32, "--lora-alpha"),
    full: bool = typer.Option(False, "--full", help="Train all weights instead of a LoRA adapter."),
    save_steps: int = typer.Option(25, "--save-steps", help="Checkpoint every N steps (for --resume)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Only the first N examples."),
    dtype: str = typer.Option("auto", "--dtype", help="auto: bf16 on GPUs and CPUs with native bf16 (AVX512-BF16/AMX), else float32; or bfloat16, float32, float16."),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads."),
    seed: int = typer.Option(0, "--seed"),
    resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint in OUT."),
):
    """Supervised fine-tuning (TRL SFTTrainer, LoRA, loss on the completion only)."""
    from .sft import SFTOptions, train_sft

    opts = SFTOptions(epochs=epochs, max_steps=max_steps, learning_rate=lr, batch_size=batch_size,
                      grad_accum=grad_accum, max_length=max_length, lora_r=lora_r, lora_alpha=lora_alpha,
                      full=full, save_steps=save_steps, limit=limit, dtype=dtype, threads=threads, seed=seed)
    summary = _run(train_sft, data, model, out, opts, resume=resume, log=_log)
    print(json.dumps({k: v for k, v in summary.items() if k != "train_metrics"}, indent=2))


@app.command("rl")
def rl_command(
    data: str = typer.Argument(..., help="Prompts: training JSONL (prompt + gold/meta.gold) or GSM8K-style {question, answer}."),
    model: str = typer.Option("qwen2.5-coder-0.5b", "--model", help="Preset, .gguf, HF dir/id, or an SFT run's merged/ dir."),
    out: str = typer.Option(..., "--out", "-o"),
    reward: str = typer.Option("shorter-better", "--reward", help="correct, l1-exact, l1-max, shorter-better, think-prune(cap=N), kimi, adapt-think."),
    num_generations: int = typer.Option(4, "--num-generations"),
    max_completion: int = typer.Option(256, "--max-completion"),
    max_steps: int = typer.Option(50, "--max-steps"),
    lr: float = typer.Option(1e-5, "--lr"),
    temperature: float = typer.Option(1.0, "--temperature"),
    beta: float = typer.Option(0.0, "--beta", help="KL coefficient (0: no reference model)."),
    target_len: str = typer.Option("256", "--target-len", help="L1 rewards: target lengths, comma-separated."),
    limit: Optional[int] = typer.Option(None, "--limit"),
    dtype: str = typer.Option("auto", "--dtype"),
    threads: Optional[int] = typer.Option(None, "--threads"),
    seed: int = typer.Option(0, "--seed"),
    vllm: bool = typer.Option(False, "--vllm", help="GPU: generate with vLLM colocated (use_vllm=True)."),
    vllm_server: bool = typer.Option(False, "--vllm-server", help="GPU: generate with a `trl vllm-serve` server."),
    resume: bool = typer.Option(False, "--resume"),
):
    """GRPO with length-aware rewards (TRL GRPOTrainer, LoRA). CPU: smoke scale only."""
    from .rl import RLOptions, train_rl

    opts = RLOptions(reward=reward, num_generations=num_generations, max_completion=max_completion,
                     max_steps=max_steps, learning_rate=lr, temperature=temperature, beta=beta, target_len=target_len,
                     limit=limit, dtype=dtype, threads=threads, seed=seed, vllm=vllm, vllm_server=vllm_server)
    summary = _run(train_rl, data, model, out, opts, resume=resume, log=_log)
    print(json.dumps(summary, indent=2))


@app.command("export")
def export_command(
    run_dir: str = typer.Argument(..., help="An `sft`/`rl` run directory."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="GGUF path (default RUN/model-OUTTYPE.gguf)."),
    outtype: str = typer.Option("q8_0", "--outtype", help="q8_0, f16, bf16, f32 (use the same for the base)."),
    lora_gguf: bool = typer.Option(False, "--lora-gguf", help="Also write a GGUF LoRA adapter (llama.cpp lora_path)."),
):
    """Merge the LoRA adapter, save the HF model (RUN/merged) and convert it to GGUF."""
    from .export import export

    summary = _run(export, run_dir, out, outtype=outtype, lora_gguf=lora_gguf, log=_log)
    print(json.dumps(summary, indent=2))


@app.command("export-base")
def export_base_command(
    model: str = typer.Argument(..., help="The untrained base: preset, .gguf, HF dir or hub id."),
    out: str = typer.Option(..., "--out", "-o", help="GGUF path."),
    outtype: str = typer.Option("q8_0", "--outtype"),
):
    """Send the untrained base through the export path (HF -> converter -> OUTTYPE), for a fair comparison."""
    from .export import export_base

    summary = _run(export_base, model, out, outtype=outtype, log=_log)
    print(json.dumps(summary, indent=2))


@app.command("fetch-converter")
def fetch_converter_command(
    sdist: Optional[str] = typer.Option(None, "--sdist", help="A downloaded llama-cpp-python sdist (.tar.gz); default: pip download."),
):
    """Install llama.cpp's GGUF converter from llama-cpp-python's PyPI sdist into the leanthink cache (once)."""
    from .export import fetch_converter

    path = _run(fetch_converter, sdist, log=_log)
    print(path)


@app.command("latent")
def latent_command(
    recipe: str = typer.Argument(..., help="nocot-sft, cot-sft, lightthinker, coconut, codi or softcot."),
    model: str = typer.Option("smollm2-135m", "--model", help="Base model (softcot: the frozen main model): preset, .gguf, HF dir or hub id."),
    task: str = typer.Option("chain", "--task", help="Procedural task: chain (4 operands) or chain:N."),
    out: str = typer.Option(..., "--out", "-o", help="Checkpoint directory (HF model + latent.json); run it with --model OUT."),
    steps: int = typer.Option(200, "--steps", help="Optimizer steps (coconut: over all its stages)."),
    batch_size: int = typer.Option(8, "--batch-size"),
    lr: float = typer.Option(1e-4, "--lr"),
    proj_lr: float = typer.Option(1e-3, "--proj-lr", help="Learning rate of the codi/softcot projection."),
    n_train: int = typer.Option(2000, "--n-train", help="Distinct training questions (never evaluation ones)."),
    lora_r: int = typer.Option(0, "--lora-r", help="0: all weights; >0: LoRA rank (merged into the checkpoint)."),
    n_gist: int = typer.Option(2, "--n-gist", help="lightthinker: gist tokens per step."),
    thoughts_per_step: int = typer.Option(1, "--thoughts-per-step", help="coconut/codi: continuous thoughts per replaced step."),
    first_stage: int = typer.Option(0, "--first-stage", help="coconut: first curriculum stage (1 when --model is a cot-sft checkpoint)."),
    max_stage: Optional[int] = typer.Option(None, "--max-stage", help="coconut: last stage (default: every step latent)."),
    n_latent: Optional[int] = typer.Option(None, "--n-latent", help="codi: continuous thoughts (default: steps x thoughts-per-step)."),
    n_soft: int = typer.Option(4, "--n-soft", help="softcot: soft thoughts."),
    assistant: Optional[str] = typer.Option(None, "--assistant", help="softcot: the frozen assistant model (default: --model)."),
    save_every: int = typer.Option(50, "--save-every", help="Save resumable state every N steps."),
    log_every: int = typer.Option(5, "--log-every"),
    dtype: str = typer.Option("auto", "--dtype"),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads."),
    seed: int = typer.Option(0, "--seed"),
    resume: bool = typer.Option(False, "--resume", help="Continue the unfinished run in OUT."),
):
    """Latent / compressed reasoning recipes (issue 16) and their baselines, on a procedural task."""
    from ..latent.train import LatentOptions, train_latent

    opts = LatentOptions(task=task, n_train=n_train, steps=steps, batch_size=batch_size, lr=lr, proj_lr=proj_lr,
                         lora_r=lora_r, n_gist=n_gist, thoughts_per_step=thoughts_per_step, first_stage=first_stage,
                         max_stage=max_stage, n_latent=n_latent, n_soft=n_soft, assistant=assistant,
                         save_every=save_every, log_every=log_every, dtype=dtype, threads=threads, seed=seed)
    meta = _run(train_latent, recipe, model, out, opts, resume=resume, log=_log)
    print(json.dumps({k: v for k, v in meta.items() if k != "options"}, indent=2))


@app.command("latent-data")
def latent_data_command(
    out: str = typer.Argument(..., help="JSONL to write (id, question, answer, steps)."),
    task: str = typer.Option("chain", "--task"),
    n: int = typer.Option(100, "--n", help="Evaluation questions (disjoint from every training set)."),
):
    """Write a latent task's evaluation split for `leanthink bench --dataset jsonl:OUT?kind=number`."""
    from ..latent.task import parse_task, write_eval_jsonl

    path = _run(lambda: write_eval_jsonl(out, parse_task(task), n))
    print(path)


def register_data_commands(target: typer.Typer) -> None:
    """Register the data stage's commands (collect, compress) when their modules exist; a
    module that exists but fails to import is a bug and raises."""
    import importlib

    for mod, fn, name in ((".collect", "collect_command", "collect"), (".compress", "compress_command", "compress")):
        try:
            module = importlib.import_module(mod, __package__)
        except ModuleNotFoundError as exc:
            if exc.name != f"{__package__}{mod}":
                raise
            continue
        if hasattr(module, fn):
            target.command(name)(getattr(module, fn))


register_data_commands(app)
