"""Token surprisal under a scoring model: what the pruning compressors rank by.

A `Scorer` gives, for a text following a context, each token of the text (as bytes, so
that pieces of a multi-byte character stay exact) with its log-probability. That one
operation covers every importance signal the compressors need:
  * TokenSkip's default importance, self-information -log p(x_t | x_<t) of reasoning tokens
    (Selective Context), when LLMLingua-2 is not used;
  * SPIRIT's answer perplexity after removing a step;
  * ASAP's first-token surprisal of each step.

`LlamaScorer` runs llama.cpp with `logits_all=True` (a second, scoring-only context over the
same mmapped GGUF: the generation backend keeps only the last position's logits), reusing
the KV cache and logits of the longest common token prefix between calls, so that SPIRIT's
"remove one step, rescore" only evaluates the tokens after the removed step.
`TransformersScorer` does the same with one forward pass of a transformers model.
"""

from __future__ import annotations

import math
import threading
from typing import Protocol

from ...errors import ConfigError, ModelFileError, require


class Scorer(Protocol):
    name: str

    def token_logprobs(self, context: str, text: str, start: int = 0,
                       end: int | None = None) -> tuple[list[bytes], list[float]]:
        """Tokens of `text` (tokenized as a whole, as plain text) that overlap characters
        [start, end), and the natural-log probability of each given context + the text before it.

        `context` is a rendered chat prompt (its markup is special tokens); `text` is what the
        assistant wrote. Scoring a part of the text through `start`, rather than cutting the
        string in two, keeps the tokenization the model would have produced: BPE merges across
        any cut point (`\\(` + `\\boxed` is one token `(\\` in Qwen's vocabulary)."""
        ...

    def count_tokens(self, text: str) -> int:
        ...


def log_softmax_rows(logits, idx):
    """log p of token idx[r] under row r of logits. float32 with one temporary buffer: a row is
    a whole vocabulary (151k for Qwen), so float64 copies cost more than the model's forward."""
    import numpy as np

    x = np.asarray(logits, dtype=np.float32)
    m = x.max(axis=1)
    tmp = np.subtract(x, m[:, None])
    np.exp(tmp, out=tmp)
    lse = m.astype(np.float64) + np.log(tmp.sum(axis=1, dtype=np.float64))
    return x[np.arange(len(idx)), idx].astype(np.float64) - lse


class LlamaScorer:
    """Scores with llama.cpp. `n_ctx` bounds context + text (the logits buffer is n_ctx x vocab floats)."""

    def __init__(self, path: str, name: str | None = None, *, n_ctx: int = 2048, n_threads: int | None = None):
        import os

        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        llama_cpp = require("llama_cpp", "llamacpp", "surprisal scoring with llama.cpp")
        try:
            self.llm = llama_cpp.Llama(model_path=path, n_ctx=n_ctx, n_batch=512, n_threads=n_threads,
                                       logits_all=True, verbose=False)
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelFileError(f"llama.cpp could not load '{path}' for scoring: {exc}") from exc
        self.name = f"llama.cpp:{name or path}"
        self.n_ctx = n_ctx
        self._lock = threading.Lock()

    def _tok(self, text: str, special: bool) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=special) if text else []

    def count_tokens(self, text: str) -> int:
        return len(self._tok(text, False))

    def token_logprobs(self, context: str, text: str, start: int = 0,
                       end: int | None = None) -> tuple[list[bytes], list[float]]:
        # The context is a rendered chat prompt (our own template output): its markup is special tokens.
        ctx = self._tok(context, True)
        if self.llm._model.add_bos_token() and self.llm.token_bos() >= 0 and (not ctx or ctx[0] != self.llm.token_bos()):
            ctx = [self.llm.token_bos()] + ctx
        ids = self._tok(text, False)
        if not ids:
            return [], []
        if not ctx:
            raise ConfigError("scoring needs a non-empty context (the prompt)")
        toks = ctx + ids
        if len(toks) > self.n_ctx:
            raise ConfigError(f"scoring needs {len(toks)} tokens but the scorer's context is {self.n_ctx}; "
                              "raise it with --scorer-ctx")
        with self._lock:
            llm = self.llm
            keep = 0
            for a, b in zip(llm.input_ids[: llm.n_tokens], toks):
                if a != b:
                    break
                keep += 1
            keep = min(keep, len(toks) - 1)  # the logits rows of kept positions stay valid
            llm.n_tokens = keep
            llm.eval(toks[keep:])
            rows = llm.scores[len(ctx) - 1: len(toks) - 1]
            lps = log_softmax_rows(rows, ids)
        pieces, prev = [], list(ctx)
        for t in ids:
            pieces.append(self.llm.detokenize([t], prev_tokens=prev))
            prev.append(t)
        return from_offset(pieces, [float(x) for x in lps], text, start, end)

    def close(self) -> None:
        try:
            self.llm.close()
        except Exception:
            pass


class TransformersScorer:
    """Scores with a transformers causal LM (a local HF directory, a GGUF through transformers, a hub id)."""

    def __init__(self, backend):
        self.backend = backend
        self.name = f"transformers:{backend.model_id}"

    def count_tokens(self, text: str) -> int:
        return self.backend.count_tokens(text)

    def token_logprobs(self, context: str, text: str, start: int = 0,
                       end: int | None = None) -> tuple[list[bytes], list[float]]:
        be = self.backend
        torch = be._torch
        ctx = be.encode(context)
        ids = be.tokenizer.encode(text, add_special_tokens=False)
        if not ids:
            return [], []
        with torch.inference_mode():
            x = torch.tensor([ctx + ids], dtype=torch.long, device=be.device)
            logits = be.model(input_ids=x, use_cache=False).logits[0, len(ctx) - 1: -1].float()
            lps = torch.log_softmax(logits, dim=-1)[torch.arange(len(ids)), torch.tensor(ids)].tolist()
        pieces, prev_text = [], ""
        for i in range(len(ids)):
            cur = be.tokenizer.decode(ids[: i + 1], skip_special_tokens=False, clean_up_tokenization_spaces=False)
            pieces.append(cur[len(prev_text):].encode("utf-8"))
            prev_text = cur
        return from_offset(pieces, [float(v) for v in lps], text, start, end)


def from_offset(pieces: list[bytes], lps: list[float], text: str, start: int,
                end: int | None = None) -> tuple[list[bytes], list[float]]:
    """The tokens overlapping characters [start, end) of `text` (tokens straddling a bound included)."""
    if start <= 0 and end is None:
        return pieces, lps
    lo = len(text[:max(0, start)].encode("utf-8"))
    hi = len(text[:end].encode("utf-8")) if end is not None else None
    out_p, out_l, pos = [], [], 0
    for p, lp in zip(pieces, lps):
        a, pos = pos, pos + len(p)
        if pos > lo and (hi is None or a < hi):
            out_p.append(p)
            out_l.append(lp)
    return out_p, out_l


def load_scorer(model: str, *, n_ctx: int = 2048) -> Scorer:
    """A scorer for a model string: presets and .gguf files through llama.cpp, HF models through transformers."""
    from ...models import PRESETS, ensure_preset_file, parse_model_string

    spec = parse_model_string(model)
    if spec.kind == "preset":
        preset = PRESETS[spec.target]
        return LlamaScorer(str(ensure_preset_file(preset, quiet=True)), preset.name, n_ctx=n_ctx,
                           n_threads=_threads(spec.options))
    if spec.kind == "gguf":
        return LlamaScorer(spec.target, n_ctx=n_ctx, n_threads=_threads(spec.options))
    if spec.kind == "hf":
        from ...backends import load_backend

        return TransformersScorer(load_backend(model, quiet=True))
    from ...models import redact

    raise ConfigError(f"cannot score tokens with '{redact(model)}': surprisal "
                      "needs the model's logits for given text (a preset, a .gguf file or a transformers model); "
                      "pass --scorer MODEL")


def _threads(options: dict) -> int | None:
    v = options.get("threads")
    return int(v) if v else None


def surprisal(scorer: Scorer, context: str, text: str) -> tuple[list[bytes], list[float]]:
    """(pieces, -log p in nats) of each token of `text`."""
    pieces, lps = scorer.token_logprobs(context, text)
    return pieces, [-x for x in lps]


def perplexity(scorer: Scorer, context: str, text: str, start: int = 0, end: int | None = None) -> float:
    _, lps = scorer.token_logprobs(context, text, start, end)
    return math.exp(-sum(lps) / len(lps)) if lps else 1.0
