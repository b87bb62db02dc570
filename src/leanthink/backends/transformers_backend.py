"""Hugging Face transformers, in process: any causal LM directory, hub id or GGUF file.

Generation is a small manual loop (in the style of mlx-lm) rather than
`model.generate`, so that each step yields its token id, logprob, top-k alternatives
and, on request, the last-layer hidden state, and so that closing the stream stops
generation at once. The KV cache of the previous call is kept, and reused where it was
evaluated exactly as the new prompt asks (same tokens, same forward pass): a prompt's
numbers never depend on what ran before, and continuing or probing from a `Continuation`
(the exact ids of a chain) only evaluates the new tokens.

GGUF files are read by transformers itself (`from_pretrained(dir, gguf_file=...)`, which
dequantizes or unpacks the weights), so the numbers, and sometimes the greedy text,
differ from llama.cpp's for the same file.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Iterator

from ..errors import ConfigError, ModelFileError, require
from . import chat_template
from .base import BaseBackend, Capabilities, Chunk, SamplingParams, StopMatcher
from .continuation import Continuation
from .llamacpp import GEN, _load_template_option

_DTYPES = ("float32", "bfloat16", "float16", "auto")
_EXTRA_EOS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<｜end▁of▁sentence｜>")
_CONTEXT_TOKENS = 5
"""Prompt tokens decoded along with the output, so that the first output token gets
its leading space right (SentencePiece drops it at the start of a decode)."""


class TransformersBackend(BaseBackend):
    name = "transformers"
    exact_continuation = True
    """`stream` evaluates a `Continuation`'s parts as they were first evaluated (`_layout`)."""
    capabilities = Capabilities(
        logprobs=True, top_logprobs=True, prefix_continuation=True, hidden_states=True,
        parallel_samples=False, token_ids=True, cancellation=True,
    )

    def __init__(self, target: str, *, gguf_file: str | None = None, device: str | None = None,
                 dtype: str | None = None, template: str | None = None, threads: int | str | None = None,
                 model_id: str | None = None):
        transformers = require("transformers", "transformers", "the transformers backend")
        torch = require("torch", "transformers", "the transformers backend")
        self._torch = torch
        if dtype is not None and dtype not in _DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(_DTYPES)}, got '{dtype}'")
        if threads is not None:
            try:
                torch.set_num_threads(int(threads))
            except ValueError:
                raise ConfigError(f"option threads must be an integer, got '{threads}'") from None

        source, gguf_file = _resolve_source(target, gguf_file)
        self.source_dir = source if gguf_file is None and Path(source).is_dir() else None
        """The model directory loaded (None for GGUF files and hub ids): where the latent
        reasoning methods read the checkpoint's `latent.json` (chosen by whoever loaded it)."""
        if gguf_file:
            require("gguf", "transformers", "loading a GGUF file with transformers")
        self.model_id = model_id or target
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if dtype is None:
            dtype = "float32" if self.device == "cpu" else "auto"
        torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)

        self._load_model(transformers, source, gguf_file, torch_dtype)

        self._lock = threading.RLock()
        self._saved: tuple[list[int], list, Any, Any] | None = None
        """(token ids whose keys/values it holds, how each was evaluated, cache, (n, logits of
        position n-1) where n ends a prompt) from the last finished stream."""
        self._read_model_info(template)

    def _load_model(self, transformers, source: str, gguf_file: str | None, torch_dtype) -> None:
        """Tokenizer and model onto `self.device`, in eval mode; load failures become user errors."""
        kw = {"gguf_file": gguf_file} if gguf_file else {}
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(source, **kw)
            self.model = transformers.AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, **kw)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            what = f"'{gguf_file}' in '{source}'" if gguf_file else f"'{source}'"
            raise ModelFileError(
                f"transformers could not load {what}: {exc}. Give a local model directory, a .gguf "
                "file of a supported architecture, or a hub id (needs network access to the hub)."
            ) from exc
        try:
            self.model.to(self.device)
        except (RuntimeError, AssertionError) as exc:
            raise ConfigError(f"cannot move the model to device '{self.device}': {exc}") from exc
        self.model.eval()

    def _read_model_info(self, template: str | None) -> None:
        """Chat template, special tokens, context size and the forward's logits-to-keep keyword."""
        tmpl = self.tokenizer.chat_template
        if isinstance(tmpl, dict):  # several named templates
            tmpl = tmpl.get("default") or next(iter(tmpl.values()), None)
        self.chat_template = _load_template_option(template) or tmpl
        self._bos = self.tokenizer.bos_token or ""
        self._eos = self.tokenizer.eos_token or ""
        self._special_cache = None
        self._eos_ids = self._find_eos_ids()
        cfg = self.model.config
        self.n_ctx = int(getattr(cfg, "max_position_embeddings", None) or 0) or None
        self.hidden_size = getattr(cfg, "hidden_size", None)
        import inspect

        params = inspect.signature(self.model.forward).parameters
        self._keep_kw = next((k for k in ("logits_to_keep", "num_logits_to_keep") if k in params), None)

    def _find_eos_ids(self) -> set[int]:
        ids: set[int] = set()
        for src in (self.tokenizer.eos_token_id, getattr(self.model.generation_config, "eos_token_id", None)):
            if isinstance(src, int):
                ids.add(src)
            elif isinstance(src, (list, tuple)):
                ids.update(i for i in src if isinstance(i, int))
        for text in _EXTRA_EOS:
            toks = self.tokenizer.encode(text, add_special_tokens=False)
            if len(toks) == 1:
                ids.add(toks[0])
        return ids

    # -- tokenizer -------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        add_special = not (self._bos and text.startswith(self._bos))
        return hf_encode(self.tokenizer, text, add_special, self._specials())

    def count_tokens(self, text: str) -> int:
        return len(hf_encode(self.tokenizer, text, False, self._specials())) if text else 0

    def _specials(self):
        if self._special_cache is None:
            self._special_cache = hf_specials(self.tokenizer)
        return self._special_cache

    def render_chat(self, messages, add_generation_prompt=True, **kwargs) -> str:
        return chat_template.render(
            self.chat_template, messages, model_id=self.model_id, bos_token=self._bos,
            eos_token=self._eos, add_generation_prompt=add_generation_prompt,
            specials=self._specials()[0], **kwargs,
        )

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    # -- model calls -------------------------------------------------------------
    def _forward(self, ids: list[int], cache, hidden: bool):
        """One forward pass over `ids` after `cache`: (last-position logits, hidden state or None, cache)."""
        torch = self._torch
        kw = {self._keep_kw: 1} if self._keep_kw else {}
        with torch.inference_mode():
            x = torch.tensor([ids], dtype=torch.long, device=self.device)
            out = self.model(input_ids=x, past_key_values=cache, use_cache=True,
                             output_hidden_states=hidden, **kw)
            logits = out.logits[0, -1].float()
            h = out.hidden_states[-1][0, -1].float().cpu().numpy() if hidden else None
        return logits, h, out.past_key_values

    def hidden_states_for(self, text: str):
        """Last-layer hidden states of every token of `text`: a float32 array [n_tokens, hidden]."""
        ids = self.encode(text)
        if not ids:
            raise ConfigError("hidden_states_for needs a non-empty text")
        torch = self._torch
        with self._lock, torch.inference_mode():
            x = torch.tensor([ids], dtype=torch.long, device=self.device)
            out = self.model(input_ids=x, use_cache=False, output_hidden_states=True)
            return out.hidden_states[-1][0].float().cpu().numpy()

    def _take_cache(self, tokens: list[int], tags: list, use_snap: bool) -> tuple[Any, int, Any, Any]:
        """Reuse the saved KV cache where it was evaluated exactly as `tags` asks (same tokens,
        same forward pass): (cache or None, tokens covered, logits of the last token if kept,
        the kept prompt-end logits still valid). Cropped to that prefix."""
        saved, self._saved = self._saved, None
        if saved is None:
            return None, 0, None, None
        old, old_tags, cache, snap = saved
        n, limit = 0, min(len(old), len(tokens))
        while n < limit and old[n] == tokens[n] and old_tags[n] == tags[n]:
            n += 1
        hit = use_snap and n == len(tokens) and snap is not None and snap[0] == n
        if not hit:
            n = min(n, len(tokens) - 1)  # always feed at least the last unit again, to get logits
            if tags[n] is not GEN:
                n = tags[n][0]  # a forward pass is reused whole or not at all
        if n <= 0 or not _croppable(cache):
            return None, 0, None, None
        try:
            if n < len(old):
                cache.crop(n - len(old))  # negative: drop that many positions (transformers 4.x and 5.x)
            if cache.get_seq_length() != n:
                return None, 0, None, None
        except (ValueError, RuntimeError, AttributeError):
            return None, 0, None, None
        snap = snap if snap is not None and snap[0] <= n else None
        return cache, n, (snap[1] if hit else None), snap

    def _layout(self, prompt: str) -> tuple[list[int], list]:
        """Tokens and how each is evaluated: a text part in one forward pass (tag `(start, end)`),
        generated ids one at a time (tag `GEN`). Same idea as the llama.cpp backend: a position's
        numbers depend on how it was evaluated, so a `Continuation` is evaluated as its parts
        were first evaluated, and the cache is reused only where that matches."""
        parts = prompt.parts if isinstance(prompt, Continuation) else (str(prompt),)
        tokens: list[int] = []
        tags: list = []
        for i, part in enumerate(parts):
            if isinstance(part, tuple):
                tokens.extend(part)
                tags.extend([GEN] * len(part))
                continue
            ids = self.encode(part) if i == 0 else hf_encode(self.tokenizer, part, False, self._specials())
            tags.extend([(len(tokens), len(tokens) + len(ids))] * len(ids))
            tokens.extend(ids)
        return tokens, tags

    # -- generation ------------------------------------------------------------
    def stream(self, prompt: str, params: SamplingParams) -> Iterator[Chunk]:
        params.validate()
        if self.model is None:
            raise ConfigError("this backend has been closed")
        tokens, tags = self._layout(prompt)
        if not tokens:
            raise ConfigError("the prompt is empty and the tokenizer adds no BOS token")
        max_tokens = params.max_tokens
        if self.n_ctx:
            if len(tokens) + 1 >= self.n_ctx:
                raise ConfigError(f"prompt is {len(tokens)} tokens; the context window is {self.n_ctx}")
            max_tokens = min(max_tokens, self.n_ctx - len(tokens))
        return self._stream(tokens, tags, params, max_tokens)

    def _stream(self, tokens: list[int], tags: list, params: SamplingParams, max_tokens: int) -> Iterator[Chunk]:
        torch = self._torch
        with self._lock:
            gen = None
            if params.temperature > 0:
                gen = torch.Generator(device=self.device)
                if params.seed is not None:
                    gen.manual_seed(params.seed)
                else:
                    gen.seed()  # a fresh random seed; leaves torch's global RNG alone
            cache, n_cached, logits, snap = self._take_cache(tokens, tags, use_snap=not params.hidden_states)
            hidden = None
            fed, fed_tags = list(tokens[:n_cached]), list(tags[:n_cached])  # what `cache` holds
            tokens, tags = list(tokens), list(tags)
            consistent = True  # False while a forward pass is running
            stops = StopMatcher(params.stop)
            context = tokens[-_CONTEXT_TOKENS:]
            dec = _Detok(self._decode, context)
            produced = 0
            try:
                while True:
                    consistent = False
                    i = len(fed)
                    while i < len(tokens):  # each unit as `_layout` says
                        j = i + 1 if tags[i] is GEN else tags[i][1]
                        logits, hidden, cache = self._forward(tokens[i:j], cache, params.hidden_states)
                        fed.extend(tokens[i:j])
                        fed_tags.extend(tags[i:j])
                        i = j
                        if i == len(tokens) and tags[-1] is not GEN:
                            # A prompt's end: its logits serve the next stream of the same prompt
                            # (the next method on an item), exactly as this evaluation gave them.
                            snap = (i, logits.clone())
                    consistent = True
                    tok = _sample(torch, logits, params, gen)
                    lp, top = self._logprobs(torch, logits, tok, params.logprobs)
                    produced += 1
                    if tok in self._eos_ids:
                        tail = stops.flush() + dec.flush()
                        yield Chunk(tail, [tok], lp, top, finish_reason="stop", hidden_state=hidden)
                        return
                    last = produced >= max_tokens
                    piece = dec.add(tok) + (dec.flush() if last else "")
                    emit, stopped = stops.feed(piece)
                    if stopped or last:
                        finish = "stop" if stopped else "length"
                        emit += "" if stopped else stops.flush()
                        yield Chunk(emit, [tok], lp, top, finish_reason=finish, hidden_state=hidden)
                        return
                    yield Chunk(emit, [tok], lp, top, hidden_state=hidden)
                    tokens.append(tok)
                    tags.append(GEN)
            finally:
                if consistent and cache is not None:
                    self._saved = (fed, fed_tags, cache, snap)

    def _logprobs(self, torch, logits, tok: int, k: int | None):
        if k is None:
            return None, None
        logp = torch.log_softmax(logits, dim=-1)
        lp = float(logp[tok])
        top = None
        if k > 0:
            vals, idx = torch.topk(logp, k)
            top = {}
            for v, i in zip(vals.tolist(), idx.tolist()):
                top.setdefault(self._decode([i]), v)  # two ids may decode alike: keep the likelier
        return lp, top

    def close(self) -> None:
        with self._lock:
            self._saved = None
            self.model = None


def hf_specials(tokenizer):
    """(pattern of special-token strings, their ids) of a Hugging Face tokenizer: the special
    tokens, and the added tokens that look like markup (`</think>`), which the tokenizer
    matches in text even when not special. Shared with the vLLM backend."""
    strings: dict[str, int] = {}
    decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
    for tid, tok in decoder.items():
        text = getattr(tok, "content", tok)
        if isinstance(text, str) and text and (getattr(tok, "special", True) or chat_template.looks_like_markup(text)):
            strings[text] = int(tid)
    for text in getattr(tokenizer, "all_special_tokens", None) or []:
        tid = tokenizer.convert_tokens_to_ids(text)
        if isinstance(tid, int) and text not in strings:
            strings[text] = tid
    return chat_template.specials_pattern(strings), set(strings.values())


def hf_encode(tokenizer, text: str, add_special: bool, specials) -> list[int]:
    """Token ids of a rendered prompt; content strings marked by `render` are tokenized as text
    (`split_special_tokens=True`), never as the special tokens they spell."""
    def plain(t: str) -> list[int]:
        try:
            return list(tokenizer.encode(t, add_special_tokens=False, split_special_tokens=True))
        except TypeError:  # a tokenizer without the option: pieces are split further if needed
            return list(tokenizer.encode(t, add_special_tokens=False))

    return chat_template.encode_prompt(
        text, add_special=add_special, protected=specials[1], plain=plain,
        special=lambda t, add: list(tokenizer.encode(t, add_special_tokens=add)),
    )


class _Detok:
    """Incremental detokenization that never emits a broken UTF-8 sequence.

    Decodes the running token list and emits the new suffix. Only a short window is
    decoded each step: the tokens since the previous emission plus the ones before
    them (starting with a few prompt tokens, for the leading space). Text is held back
    while it ends in U+FFFD, i.e. while a multi-byte character is still incomplete."""

    def __init__(self, decode, context: list[int]):
        self.decode = decode
        self.ids = list(context)
        self.prefix = 0  # window start
        self.read = len(self.ids)  # tokens up to here have been emitted

    def _new_text(self) -> str:
        before = self.decode(self.ids[self.prefix:self.read])
        now = self.decode(self.ids[self.prefix:])
        return now[len(before):] if len(now) > len(before) else ""

    def add(self, tok: int) -> str:
        self.ids.append(tok)
        text = self._new_text()
        if not text or text.endswith("\ufffd"):
            return ""
        self.prefix, self.read = self.read, len(self.ids)
        return text

    def flush(self) -> str:
        """Whatever is held back (possibly with U+FFFD): the stream is ending."""
        text = self._new_text()
        self.prefix = self.read = len(self.ids)
        return text


def _sample(torch, logits, params: SamplingParams, gen) -> int:
    if params.temperature == 0:
        return int(torch.argmax(logits))
    x = logits / params.temperature
    if params.top_k > 0 and params.top_k < x.numel():
        kth = torch.topk(x, params.top_k).values[-1]
        x = x.masked_fill(x < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_x, order = torch.sort(x, descending=True)
        probs = torch.softmax(sorted_x, dim=-1)
        drop = torch.cumsum(probs, dim=-1) - probs > params.top_p  # keeps at least the top token
        x = x.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
    probs = torch.softmax(x, dim=-1)
    return int(torch.multinomial(probs, 1, generator=gen))


def _croppable(cache) -> bool:
    """Only plain dynamic caches can be rolled back to a shorter prefix."""
    if cache is None or not hasattr(cache, "crop") or type(cache).__name__ != "DynamicCache":
        return False
    layers = getattr(cache, "layers", None)
    return layers is None or all(type(layer).__name__ == "DynamicLayer" for layer in layers)


def _resolve_source(target: str, gguf_file: str | None) -> tuple[str, str | None]:
    """(directory or hub id, GGUF file name inside it or None)."""
    p = Path(target).expanduser()
    if gguf_file is None and target.lower().endswith(".gguf"):
        if not p.is_file():
            raise ModelFileError(f"GGUF file '{target}' does not exist")
        return str(p.resolve().parent), p.name
    if gguf_file is not None:
        g = Path(gguf_file).expanduser()
        if g.is_absolute():
            if not g.is_file():
                raise ModelFileError(f"GGUF file '{gguf_file}' does not exist")
            return str(g.parent), g.name
        if p.is_dir() and not (p / gguf_file).is_file():
            raise ModelFileError(f"GGUF file '{gguf_file}' not found in '{target}'")
    looks_local = target.startswith((".", "/", "~")) or p.exists()
    if looks_local and not p.exists():
        raise ModelFileError(f"model directory '{target}' does not exist")
    if p.is_dir():
        return str(p), gguf_file
    if p.is_file():
        raise ModelFileError(f"'{target}' is a file; give a model directory or a .gguf file")
    return target, gguf_file
