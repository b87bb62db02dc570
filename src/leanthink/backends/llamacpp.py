"""In-process llama.cpp via llama-cpp-python: the embedded default engine (CPU).

We drive `Llama.generate` ourselves instead of `create_completion` so that each step
yields the token id, its logprob and the top-k alternatives, and so that closing the
stream stops generation immediately. `Llama.generate` keeps the KV cache for the
longest common token prefix with the previous call, so continuing from a prefix or
probing a trial answer only evaluates the new tokens.
"""

from __future__ import annotations

import os
import threading
from typing import Iterator

import numpy as np

from ..errors import BackendUnavailableError, ConfigError, ModelFileError, require
from . import chat_template
from .base import BaseBackend, Capabilities, Chunk, SamplingParams, StopMatcher


class LlamaCppBackend(BaseBackend):
    name = "llama.cpp"
    capabilities = Capabilities(
        logprobs=True, top_logprobs=True, prefix_continuation=True, hidden_states=False,
        parallel_samples=False, token_ids=True, cancellation=True,
    )

    def __init__(self, path: str, model_id: str | None = None, *, n_ctx: int = 8192,
                 n_threads: int | None = None, template: str | None = None, verbose: bool = False):
        # llama.cpp's OpenMP threads spin while idle by default; on a small shared machine that
        # stalls every other process (and our own probes between streams). Users can override.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        llama_cpp = require("llama_cpp", "llamacpp", "the llama.cpp backend")
        self.model_id = model_id or path
        self.path = path
        try:
            self.llm = llama_cpp.Llama(
                model_path=path, n_ctx=n_ctx, n_threads=n_threads, n_batch=512,
                logits_all=False, verbose=verbose,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelFileError(f"llama.cpp could not load '{path}': {exc}") from exc
        self._lock = threading.RLock()
        self._n_vocab = self.llm.n_vocab()
        meta = self.llm.metadata or {}
        self.chat_template = _load_template_option(template) or meta.get("tokenizer.chat_template")
        self._bos = self._token_text(self.llm.token_bos())
        self._eos = self._token_text(self.llm.token_eos())
        self.n_ctx = n_ctx
        self._eos_ids = {self.llm.token_eos()} | _extra_eos(self.llm)

    def _token_text(self, tok: int) -> str:
        if tok is None or tok < 0:
            return ""
        try:
            return self.llm.detokenize([tok], special=True).decode("utf-8", errors="ignore")
        except Exception:
            return ""

    # -- tokenizer -------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        add_bos = bool(self._bos) and not text.startswith(self._bos) and self.llm._model.add_bos_token()
        return self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)

    def count_tokens(self, text: str) -> int:
        if not text:
            return 0
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def render_chat(self, messages, add_generation_prompt=True, **kwargs) -> str:
        return chat_template.render(
            self.chat_template, messages, model_id=self.model_id, bos_token=self._bos,
            eos_token=self._eos, add_generation_prompt=add_generation_prompt, **kwargs,
        )

    # -- generation ------------------------------------------------------------
    def stream(self, prompt: str, params: SamplingParams) -> Iterator[Chunk]:
        params.validate()
        tokens = self.encode(prompt)
        if len(tokens) + 1 >= self.n_ctx:
            raise ConfigError(f"prompt is {len(tokens)} tokens; the context window is {self.n_ctx}")
        max_tokens = min(params.max_tokens, self.n_ctx - len(tokens) - 1)
        return self._stream(tokens, params, max_tokens)

    def _stream(self, tokens: list[int], params: SamplingParams, max_tokens: int) -> Iterator[Chunk]:
        with self._lock:
            llm = self.llm
            if params.seed is not None:
                llm.set_seed(params.seed)
            greedy = params.temperature == 0
            sampling = dict(
                temp=params.temperature if not greedy else 0.0,
                top_p=params.top_p, top_k=params.top_k if params.top_k > 0 else (1 if greedy else 0),
                min_p=0.0, repeat_penalty=1.0, reset=True,
            )
            me = object()
            self._owner = me
            gen = llm.generate(tokens, **sampling)
            stops = StopMatcher(params.stop)
            pending = b""
            produced: list[int] = []
            prev = list(tokens)
            eos = self._eos_ids
            try:
                while True:
                    try:
                        tok = next(gen)
                    except StopIteration:
                        return
                    lp, top = self._logprobs(tok, params.logprobs)
                    if tok in eos:
                        tail = stops.flush() + pending.decode("utf-8", errors="replace")
                        yield Chunk(tail, [tok], lp, top, finish_reason="stop")
                        return
                    produced.append(tok)
                    pending += llm.detokenize([tok], prev_tokens=prev)
                    prev.append(tok)
                    text, pending = _split_utf8(pending)
                    emit, stopped = stops.feed(text)
                    if stopped:
                        yield Chunk(emit, [tok], lp, top, finish_reason="stop")
                        return
                    last = len(produced) >= max_tokens
                    if last:
                        emit += stops.flush() + pending.decode("utf-8", errors="replace")
                    yield Chunk(emit, [tok], lp, top, finish_reason="length" if last else None)
                    if last:
                        return
                    if self._owner is not me:
                        # Another stream used the model while this one was suspended (same thread,
                        # e.g. a probe): the KV cache no longer holds our context. Restart from our
                        # own tokens; the prefix match re-evaluates only what diverged.
                        gen.close()
                        self._owner = me
                        gen = llm.generate(tokens + produced, **sampling)
            except RuntimeError as exc:
                raise BackendUnavailableError(f"llama.cpp failed while generating: {exc}") from exc
            finally:
                gen.close()

    def _logprobs(self, tok: int, k: int | None):
        if k is None:
            return None, None
        ptr = self.llm._ctx.get_logits_ith(-1)
        logits = np.ctypeslib.as_array(ptr, shape=(self._n_vocab,)).astype(np.float64)
        m = logits.max()
        lse = m + np.log(np.exp(logits - m).sum())
        lp = float(logits[tok] - lse)
        top = None
        if k > 0:
            idx = np.argpartition(-logits, k)[:k]
            idx = idx[np.argsort(-logits[idx])]
            top = {}
            for i in idx:
                top[self._token_text(int(i))] = float(logits[i] - lse)
        return lp, top

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            try:
                llm.close()
            except Exception:
                pass
            self.llm = None


def _extra_eos(llm) -> set[int]:
    """End-of-turn tokens that are not the vocab's EOS (e.g. Qwen's `<|im_end|>`)."""
    out = set()
    for text in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<｜end▁of▁sentence｜>"):
        ids = llm.tokenize(text.encode(), add_bos=False, special=True)
        if len(ids) == 1:
            out.add(ids[0])
    return out


def _split_utf8(buf: bytes) -> tuple[str, bytes]:
    """Decode the complete UTF-8 prefix of buf; keep an incomplete trailing sequence."""
    for cut in range(len(buf), max(len(buf) - 4, -1), -1):
        try:
            return buf[:cut].decode("utf-8"), buf[cut:]
        except UnicodeDecodeError:
            continue
    return buf.decode("utf-8", errors="replace"), b""


def _load_template_option(template: str | None) -> str | None:
    if not template:
        return None
    if template in chat_template.BUILTIN_TEMPLATES:
        return chat_template.BUILTIN_TEMPLATES[template]
    from pathlib import Path

    p = Path(template).expanduser()
    if not p.is_file():
        raise ConfigError(f"chat template '{template}' is neither a built-in ({', '.join(chat_template.BUILTIN_TEMPLATES)}) nor a file")
    return p.read_text()
