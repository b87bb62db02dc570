"""Checkpoint directories: an ordinary Hugging Face model directory plus `latent.json`.

Why that shape: the model loads with any transformers tool and with leanthink's
transformers backend (`--model DIR`), so the inference methods find their recipe's
settings next to the weights the operator loaded, never in a request parameter (the
server's rule: clients never choose paths). Extra trained pieces sit beside it:
`projection.pt` (CODI, SoftCoT) and `assistant/` (SoftCoT's frozen assistant model).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from ..errors import ConfigError

META = "latent.json"
PROJECTION = "projection.pt"
ASSISTANT = "assistant"
FORMAT_VERSION = 1

BOT, EOT, LATENT = "<|start-latent|>", "<|end-latent|>", "<|latent|>"
"""Coconut/CODI markers around the continuous thoughts (LATENT is a placeholder id only)."""


def gist_tokens(n: int) -> list[str]:
    return [f"<|gist{i}|>" for i in range(n)]


def new_tokens(recipe: str, n_gist: int) -> list[str]:
    """The special tokens a recipe adds to the tokenizer (none for the baselines and for
    SoftCoT, whose main model is frozen and so could not learn a new embedding)."""
    if recipe in ("coconut", "codi"):
        return [BOT, EOT, LATENT]
    if recipe == "lightthinker":
        return gist_tokens(n_gist)
    return []


def add_tokens(tokenizer, model, tokens: list[str]) -> list[int]:
    """Add special tokens (once) and grow the embeddings to match; returns their ids."""
    missing = [t for t in tokens if tokenizer.convert_tokens_to_ids(t) in (None, tokenizer.unk_token_id)]
    if missing:
        tokenizer.add_tokens(missing, special_tokens=True)
    if model is not None and model.get_input_embeddings().weight.shape[0] < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer))
    return [tokenizer.convert_tokens_to_ids(t) for t in tokens]


def read_meta(directory: str | Path) -> dict[str, Any] | None:
    p = Path(directory) / META
    if not p.is_file():
        return None
    try:
        meta = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read {p}: {exc}") from None
    if not isinstance(meta, dict) or "recipe" not in meta:
        raise ConfigError(f"{p} is not a latent-reasoning checkpoint description (no 'recipe')")
    return meta


def write_meta(directory: str | Path, meta: dict[str, Any]) -> Path:
    p = Path(directory) / META
    tmp = p.with_name(META + ".tmp")
    tmp.write_text(json.dumps({"format": FORMAT_VERSION, **meta}, indent=2))
    os.replace(tmp, p)
    return p


def save_checkpoint(out: Path, model, tokenizer, meta: dict[str, Any], *, projection=None, assistant=None) -> None:
    """Write the model, tokenizer, extra pieces and `latent.json` (last, so a directory with
    `latent.json` is always complete)."""
    torch = __import__("torch")
    out.mkdir(parents=True, exist_ok=True)
    (out / META).unlink(missing_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if projection is not None:
        torch.save(projection.state_dict(), out / PROJECTION)
    if assistant is not None:
        shutil.rmtree(out / ASSISTANT, ignore_errors=True)
        assistant[0].save_pretrained(out / ASSISTANT)
        assistant[1].save_pretrained(out / ASSISTANT)
    write_meta(out, meta)
