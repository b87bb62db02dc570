"""GPU smoke test of the latent-reasoning recipes and inference mechanisms (issue 16).

Self-contained: needs torch and transformers only (no weights, no network, no leanthink
install: the latent modules are loaded from this checkout without leanthink's top-level
package, whose other dependencies a bare GPU image may lack). It builds a character-level
tokenizer and tiny random-init models (a Llama-config main model; for SoftCoT a
Qwen2-config assistant of another width, so the projection maps between sizes), trains each
recipe a few steps and runs each inference mechanism, printing one line per recipe:

    python benchmarks/latent/gpu_smoke.py                 # CUDA, bf16
    python benchmarks/latent/gpu_smoke.py --device cpu    # CPU, fp32

Exit status 1 if any recipe fails or its loss does not fall.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
import types
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"


def _load_latent():
    """Import leanthink.latent.* without running leanthink/__init__ (pydantic, etc.)."""
    if "leanthink" not in sys.modules:
        pkg = types.ModuleType("leanthink")
        pkg.__path__ = [str(SRC / "leanthink")]
        sys.modules["leanthink"] = pkg
    import importlib

    return {m: importlib.import_module(f"leanthink.latent.{m}") for m in
            ("recipes", "train", "infer", "checkpoint", "task", "layout", "ops")}


def make_tokenizer():
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = list("0123456789+-=#\n :QA")
    vocab = {t: i for i, t in enumerate(["<unk>", "<pad>", "<eos>"] + chars)}
    t = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    t.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=t, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>")


def make_model(kind: str, tok, hidden: int, device: str, dtype):
    import torch
    import transformers

    cls = {"llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
           "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM)}[kind]
    cfg = cls[0](vocab_size=64, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                 tie_word_embeddings=True, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    return cls[1](cfg).to(device=device, dtype=dtype)


def run_recipe(mods, recipe: str, device: str, dtype, steps: int) -> tuple[str, bool]:
    import torch

    tr, ck, task_mod = mods["train"], mods["checkpoint"], mods["task"]
    opts = tr.LatentOptions(steps=steps, batch_size=8, lr=3e-3, proj_lr=3e-3, n_train=16, device=device)
    opts.validate(recipe)
    tok = make_tokenizer()
    model = make_model("llama", tok, 64, device, dtype)
    ck.add_tokens(tok, model, ck.new_tokens(recipe, opts.n_gist))
    model.train()
    assistant = None
    if recipe == "softcot":
        atok = make_tokenizer()
        assistant = (make_model("qwen2", atok, 96, device, dtype), atok)
    task = task_mod.parse_task(opts.task)
    rec = mods["recipes"].build(recipe, model, tok, opts, n_steps=task.n_steps, assistant=assistant)
    examples = task_mod.train_examples(task, opts.n_train, 0)
    optim = tr._optimizer(torch, rec, opts)
    losses, stage, t0 = [], None, time.time()
    for step in range(steps):
        new = rec.stage_for(step, steps)
        if stage is not None and new != stage:
            optim = tr._optimizer(torch, rec, opts)
        stage = new
        loss, _, _ = rec.loss(tr.batch_for(step, examples, opts.batch_size, 0), stage)
        loss.backward()
        optim.step()
        optim.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    if device == "cuda":
        torch.cuda.synchronize()
    train_s = time.time() - t0
    return _infer(mods, recipe, rec, tok, losses, train_s)


def _infer(mods, recipe, rec, tok, losses, train_s) -> tuple[str, bool]:
    ck = mods["checkpoint"]
    with tempfile.TemporaryDirectory() as d:
        meta = {"recipe": recipe, "inference": rec.inference_meta(), "prompt_format": "Q: {question}\\nA:\\n"}
        ck.save_checkpoint(Path(d), rec.model, tok, meta, projection=rec.projection,
                           assistant=(rec.amodel, rec.atok) if recipe == "softcot" else None)
        rec.model.eval()
        t0 = time.time()
        run = mods["infer"].run(recipe, rec.model, tok, meta, "5+8-3+9", 24, Path(d))
        infer_s = time.time() - t0
    ok = losses[-1] < losses[0]
    return (f"{recipe:13s} loss {losses[0]:.3f} -> {losses[-1]:.3f} {'ok ' if ok else 'NOT FALLING'} "
            f"train {train_s:.1f}s  infer {infer_s:.2f}s  tokens {run.thinking_tokens + run.answer_tokens} "
            f"latent {run.latent_steps} gist {run.overhead_tokens} peak {run.peak_context}"), ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--dtype", default=None, help="default: bfloat16 on cuda, float32 on cpu")
    args = ap.parse_args(argv)
    import torch
    import transformers

    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device; use --device cpu", file=sys.stderr)
        return 2
    dtype = getattr(torch, args.dtype or ("bfloat16" if args.device == "cuda" else "float32"))
    name = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {name}, {dtype}")
    mods = _load_latent()
    failed = 0
    for recipe in ("nocot-sft", "cot-sft", "lightthinker", "coconut", "codi", "softcot"):
        try:
            line, ok = run_recipe(mods, recipe, args.device, dtype, args.steps)
        except Exception:  # noqa: BLE001 - report every recipe, then fail
            line, ok = f"{recipe:13s} FAILED\n{traceback.format_exc()}", False
        failed += not ok
        print(line, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
