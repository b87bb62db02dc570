"""In-process llama.cpp via llama-cpp-python: the embedded default engine (CPU).

We drive the decode loop ourselves (`Llama.eval` and a llama.cpp sampler) instead of
`create_completion` so that each step yields the token id, its logprob and the top-k
alternatives, and so that closing the stream stops generation immediately.

Same prompt, same chain: llama.cpp's numbers are not batch-invariant (a position's logits
differ when the tokens before it were evaluated one by one, as generated, or as a prompt,
and with how the prompt was split into batches; measured up to ~0.8 logit on our models,
enough to flip a greedy near-tie). `Llama.generate` reuses the KV cache for the longest
common prefix with whatever ran before, so a prompt's chain depended on the previous
request. Here every position of the cache is tagged with how it was evaluated (`_layout`)
and reused only where a fresh evaluation would do exactly the same, so a greedy stream is
a function of (model, prompt, parameters) alone. Continuing or probing from a
`Continuation` (exact token ids of a chain) reuses the chain's cache and evaluates only
the new tokens; a plain text prompt is evaluated fresh, except for whole batches of
`n_batch` tokens it shares with the cache, and a prompt's last logits are kept, so the
next stream of the same prompt (the next method on an item) samples from them instead of
evaluating the prompt again. The thread count is fixed when the model
loads (it does not change the numbers on our CPUs either, measured).
"""

from __future__ import annotations

import os
import threading
from typing import Iterator

import numpy as np

from ..errors import BackendUnavailableError, ConfigError, ModelFileError, require
from . import chat_template
from .base import BaseBackend, Capabilities, Chunk, SamplingParams, StopMatcher
from .continuation import Continuation


GEN = "gen"
"""Tag of a position evaluated alone, as a generated token is."""


class LlamaCppBackend(BaseBackend):
    name = "llama.cpp"
    exact_continuation = True
    """`stream` evaluates a `Continuation`'s parts as they were first evaluated (module docstring)."""
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
        self._special_cache = None
        self._tags: list = []
        """How each position in the KV cache was evaluated (`_layout`), parallel to `llm.input_ids`."""
        self._snap: tuple[int, np.ndarray] | None = None
        """(n, logits of position n-1) where position n-1 ends a prompt batch still in the cache."""
        self._owner = None

    def _token_text(self, tok: int) -> str:
        """The text of a special token (BOS, EOS, control markup); "" for none, or for a
        piece that is not text on its own (a byte of a multi-byte character)."""
        if tok is None or tok < 0:
            return ""
        try:
            return token_piece(self.llm, tok, special=True).decode("utf-8")
        except UnicodeDecodeError:
            return ""

    # -- tokenizer -------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        add_bos = bool(self._bos) and not text.startswith(self._bos) and self.llm._model.add_bos_token()
        return self._tokenize(text, add_bos)

    def count_tokens(self, text: str) -> int:
        if not text:
            return 0
        return len(self._tokenize(text, False))

    def _tokenize(self, text: str, add_bos: bool) -> list[int]:
        """Template text with special-token parsing; content marked by `render_chat` as plain
        text, so a `<|im_end|>` typed by a user never becomes the control token."""
        llm = self.llm
        return chat_template.encode_prompt(
            text, add_special=add_bos, protected=self._specials()[1],
            special=lambda t, bos: llm.tokenize(t.encode("utf-8"), add_bos=bos, special=True),
            plain=lambda t: llm.tokenize(t.encode("utf-8"), add_bos=False, special=False),
        )

    def _specials(self):
        """(pattern of special-token strings, their ids): control and unknown tokens, and the
        user-defined ones that look like markup (`</think>`): llama.cpp matches user-defined
        tokens even with `special=False`. Read once from the vocabulary's token attributes."""
        if self._special_cache is None:
            strings: dict[str, int] = {}
            for tok, control in _special_tokens(self.llm):
                text = self._token_text(tok)
                if text and (control or chat_template.looks_like_markup(text)):
                    strings[text] = tok
            pattern = chat_template.specials_pattern(strings)
            self._special_cache = (pattern, set(strings.values()))
        return self._special_cache

    def render_chat(self, messages, add_generation_prompt=True, **kwargs) -> str:
        return chat_template.render(
            self.chat_template, messages, model_id=self.model_id, bos_token=self._bos,
            eos_token=self._eos, add_generation_prompt=add_generation_prompt,
            specials=self._specials()[0], **kwargs,
        )

    # -- generation ------------------------------------------------------------
    def stream(self, prompt: str, params: SamplingParams) -> Iterator[Chunk]:
        params.validate()
        tokens, tags = self._layout(prompt)
        if not tokens:
            raise ConfigError("the prompt is empty and the model adds no BOS token")
        if len(tokens) + 1 >= self.n_ctx:
            raise ConfigError(f"prompt is {len(tokens)} tokens; the context window is {self.n_ctx}")
        max_tokens = min(params.max_tokens, self.n_ctx - len(tokens) - 1)
        tail = prompt.tail_ids if isinstance(prompt, Continuation) else ()
        return self._stream(tokens, tags, params, max_tokens, tail)

    def _layout(self, prompt: str) -> tuple[list[int], list]:
        """The prompt's tokens and how each is evaluated: text parts as a prompt, in batches of
        `n_batch` from the part's start (tag `(start, end)` of its batch); generated ids one at
        a time (tag `GEN`), as they were when generated. See `Continuation`."""
        parts = prompt.parts if isinstance(prompt, Continuation) else (str(prompt),)
        tokens: list[int] = []
        tags: list = []
        n_batch = self.llm.n_batch
        for i, part in enumerate(parts):
            if isinstance(part, tuple):
                tokens.extend(part)
                tags.extend([GEN] * len(part))
                continue
            ids = self.encode(part) if i == 0 else self._tokenize(part, False)
            start = len(tokens)
            for s in range(0, len(ids), n_batch):
                e = min(len(ids), s + n_batch)
                tags.extend([(start + s, start + e)] * (e - s))
            tokens.extend(ids)
        return tokens, tags

    def _sync(self, tokens: list[int], tags: list) -> None:
        """Make the KV cache hold `tokens`, each evaluated as `tags` says, and the context's
        logits be those of the last one. What the cache already holds is reused only where it
        was evaluated the same way (same tokens, same batch), so the result never depends on
        what ran before: a prompt's numbers are those of a fresh evaluation."""
        llm = self.llm
        have = self._tags if len(self._tags) == llm.n_tokens else []
        ids = llm.input_ids
        r, limit = 0, min(len(have), len(tokens))
        while r < limit and have[r] == tags[r] and ids[r] == tokens[r]:
            r += 1
        snap = self._snap
        if r == len(tokens) and snap is not None and snap[0] == r:
            # The same prompt again (the next method on an item): its last logits were kept
            # when its last batch was evaluated, so they are those of a fresh evaluation.
            self._truncate(r)
            np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(self._n_vocab,))[:] = snap[1]
            return
        r = min(r, len(tokens) - 1)  # the last unit is evaluated again: its logits are needed
        if tags[r] is not GEN:
            r = tags[r][0]  # a batch is reused whole or not at all
        self._truncate(r)
        i = r
        while i < len(tokens):
            j = i + 1 if tags[i] is GEN else tags[i][1]
            self._eval(tokens[i:j], tags[i:j])
            i = j
        if tags[-1] is not GEN:  # a prompt's end: keep its logits for the next stream of it
            logits = np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(self._n_vocab,))
            self._snap = (len(tokens), logits.copy())

    def _truncate(self, r: int) -> None:
        """Keep the first `r` positions of the KV cache."""
        llm = self.llm
        if r < llm.n_tokens and not llm._ctx.kv_cache_seq_rm(-1, r, -1):
            r = 0
        if r == 0:
            llm.reset()
        llm.n_tokens = r
        del self._tags[r:]
        if self._snap is not None and self._snap[0] > r:
            self._snap = None

    def _eval(self, tokens: list[int], tags: list) -> None:
        """One decode (tokens fit one batch); the tags record how the cache got its values."""
        try:
            self.llm.eval(tokens)
        except BaseException:
            self._tags, self._snap = [], None  # unknown state: the next stream evaluates from scratch
            self.llm.n_tokens = 0
            raise
        self._tags.extend(tags)

    def _stream(self, tokens: list[int], tags: list, params: SamplingParams, max_tokens: int,
                tail: tuple[int, ...]) -> Iterator[Chunk]:
        with self._lock:
            llm = self.llm
            if params.seed is not None:
                llm.set_seed(params.seed)
            greedy = params.temperature == 0
            sampler = llm._init_sampler(
                temp=params.temperature if not greedy else 0.0,
                top_p=params.top_p, top_k=params.top_k if params.top_k > 0 else (1 if greedy else 0),
                min_p=0.0, repeat_penalty=1.0,
            )
            me = object()
            self._owner = me
            tokens, tags = list(tokens), list(tags)
            stops = StopMatcher(params.stop)
            # A continuation may stop inside a multi-byte character: its bytes are still pending.
            pending = _split_utf8(b"".join(token_piece(llm, t) for t in tail))[1] if tail else b""
            produced: list[int] = []
            eos = self._eos_ids
            try:
                self._sync(tokens, tags)
                while True:
                    tok = sampler.sample(llm._ctx, -1)
                    lp, top = self._logprobs(tok, params.logprobs)
                    if tok in eos:
                        tail_text = stops.flush() + pending.decode("utf-8", errors="replace")
                        yield Chunk(tail_text, [tok], lp, top, finish_reason="stop")
                        return
                    produced.append(tok)
                    pending += token_piece(llm, tok)
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
                    tokens.append(tok)
                    tags.append(GEN)
                    if self._owner is me and llm.n_tokens == len(tokens) - 1 == len(self._tags):
                        self._eval([tok], [GEN])
                    else:
                        # Another stream used the model while this one was suspended (same thread,
                        # e.g. a probe): restore our own context, evaluated as it was.
                        self._owner = me
                        self._sync(tokens, tags)
            except RuntimeError as exc:
                raise BackendUnavailableError(f"llama.cpp failed while generating: {exc}") from exc

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
            top: dict[str, float] = {}
            for i in idx:
                key = top_key(token_piece(self.llm, int(i), special=True))
                v = float(logits[i] - lse)
                # Two tokens that add the same text are one alternative to a reader of text:
                # their probabilities add (none is dropped, and none lands under a wrong key).
                top[key] = float(np.logaddexp(top[key], v)) if key in top else v
        return lp, top

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            try:
                llm.close()
            except Exception:
                pass
            self.llm = None


def token_piece(llm, tok: int, special: bool = False) -> bytes:
    """The bytes token `tok` adds to the text. Not `Llama.detokenize`: llama-cpp-python
    0.3.x reads every piece into a 32-byte buffer and returns b"" for a longer one (240
    tokens of Qwen2.5's vocabulary, 47 of SmolLM2's: runs of spaces, dashes, long words),
    so text was lost and such tokens all shared the top-logprob key ""."""
    import ctypes

    import llama_cpp

    vocab = llm._model.vocab
    size = 64
    while True:
        buf = ctypes.create_string_buffer(size)
        n = llama_cpp.llama_token_to_piece(vocab, tok, buf, size, 0, special)
        if n >= 0:
            return buf.raw[:n]
        size = -n  # the buffer was too small: llama.cpp says how large it must be


def top_key(piece: bytes) -> str:
    """A top-logprob key: the token's text; a piece that is not text on its own (one byte
    of a multi-byte character) is keyed by its bytes, `bytes:\\xe2\\x80`, as OpenAI's API
    shows such tokens, so two different partial characters never share a key."""
    try:
        return piece.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + piece.decode("utf-8", errors="backslashreplace")


def _extra_eos(llm) -> set[int]:
    """End-of-turn tokens that are not the vocab's EOS (e.g. Qwen's `<|im_end|>`)."""
    out = set()
    for text in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<｜end▁of▁sentence｜>"):
        ids = llm.tokenize(text.encode(), add_bos=False, special=True)
        if len(ids) == 1:
            out.add(ids[0])
    return out


def _special_tokens(llm):
    """(token id, is control/unknown) for every token the tokenizer matches as a string:
    attributes CONTROL/UNKNOWN (matched with `special=True`) and USER_DEFINED (always)."""
    import llama_cpp

    n = llm.n_vocab()
    try:
        vocab = llama_cpp.llama_model_get_vocab(llm._model.model)
        control = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN
        user = llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED
        attrs = [llama_cpp.llama_vocab_get_attr(vocab, i) for i in range(n)]
    except (AttributeError, TypeError):  # an older llama-cpp-python: control tokens detokenize to ""
        return [(i, True) for i in range(n)
                if token_piece(llm, i, special=True) and not token_piece(llm, i, special=False)]
    return [(i, bool(a & control)) for i, a in enumerate(attrs) if a & (control | user)]


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
    try:
        with p.open("rb") as f:
            data = f.read(_MAX_TEMPLATE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read chat template '{template}': {exc.strerror or exc}") from None
    if len(data) > _MAX_TEMPLATE_BYTES:
        raise ConfigError(f"chat template '{template}' is larger than {_MAX_TEMPLATE_BYTES // 1024} KiB; is it a template?")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"chat template '{template}' is not UTF-8 text") from None


_MAX_TEMPLATE_BYTES = 1 << 20
"""Real chat templates are a few KiB; a cap keeps a wrong path (a model file) from being read whole."""
