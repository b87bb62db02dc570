"""Exact token counts for an OpenAI-compatible server that has no tokenize endpoint.

Hosted APIs and some servers expose no `/tokenize`; without help leanthink estimates
counts (about 4 characters a token) and marks results `approximate_counts`. The model
option `tokenizer=` names a local tokenizer that matches the served model, so counts
are exact again:

* `tokenizer=/path/model.gguf`: the GGUF's vocabulary through llama.cpp (`vocab_only`,
  no weights are loaded), so the same file that a llama.cpp server serves can count;
* `tokenizer=/path/hf-dir` or `tokenizer=ORG/NAME`: a Hugging Face tokenizer through
  `transformers.AutoTokenizer` (a hub id needs the hub or its cache).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..errors import ConfigError, ModelFileError, require

Encoder = Callable[[str], list[int]]


def load_tokenizer(spec: str) -> Encoder:
    """Return `encode(text) -> ids` for `spec`: no BOS, special-token strings parsed as the
    server parses a raw prompt (so a rendered chat template counts as the server counts it)."""
    spec = spec.strip()
    if not spec:
        raise ConfigError("option tokenizer needs a value: a .gguf file, a Hugging Face tokenizer directory or id")
    path = Path(spec).expanduser()
    if spec.lower().endswith(".gguf"):
        if not path.is_file():
            raise ConfigError(f"tokenizer file not found: {spec}")
        llama_cpp = require("llama_cpp", "llamacpp", "tokenizer=FILE.gguf")
        try:
            llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelFileError(f"llama.cpp could not read the vocabulary of '{spec}': {exc}") from exc
        return lambda text: list(llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))
    transformers = require("transformers", "transformers", "tokenizer=HF_DIR_OR_ID")
    try:
        tok = transformers.AutoTokenizer.from_pretrained(str(path) if path.exists() else spec)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load the tokenizer '{spec}': {exc}") from exc
    return lambda text: list(tok.encode(text, add_special_tokens=False))
