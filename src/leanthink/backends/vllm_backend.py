"""The vLLM offline engine (`vllm.LLM`), in process.

vLLM generates whole requests, so `stream` runs one full generation and then yields it
token by token (closing the stream early does not save any work: `cancellation=False`).
`generate(n=...)` uses vLLM's native parallel sampling. The prompt is sent as token
ids encoded here, so a chat template that already starts with BOS does not get a
second one.
"""

from __future__ import annotations

import copy
from typing import Any, Iterator

from ..errors import BackendUnavailableError, ConfigError, ModelFileError, require
from . import chat_template
from .base import BaseBackend, Capabilities, Chunk, Completion, SamplingParams
from .llamacpp import _load_template_option
from .transformers_backend import _Detok, hf_encode, hf_specials


class VLLMBackend(BaseBackend):
    name = "vllm"
    capabilities = Capabilities(
        logprobs=True, top_logprobs=True, prefix_continuation=True, hidden_states=False,
        parallel_samples=True, token_ids=True, cancellation=False,
    )

    def __init__(self, target: str, *, template: str | None = None, max_model_len: int | None = None,
                 model_id: str | None = None, **engine_kwargs: Any):
        vllm = require("vllm", "vllm", "the vLLM backend")
        self._vllm = vllm
        self.model_id = model_id or target
        kw = dict(engine_kwargs)
        if max_model_len is not None:
            kw["max_model_len"] = int(max_model_len)
        try:
            self.llm = vllm.LLM(model=target, **kw)
        except (OSError, FileNotFoundError) as exc:
            raise ModelFileError(f"vLLM could not load '{target}': {exc}") from exc
        except (ValueError, RuntimeError) as exc:
            raise BackendUnavailableError(f"vLLM could not start '{target}': {exc}") from exc
        self.tokenizer = self.llm.get_tokenizer()
        self.chat_template = _load_template_option(template) or getattr(self.tokenizer, "chat_template", None)
        self._bos = getattr(self.tokenizer, "bos_token", None) or ""
        self._eos = getattr(self.tokenizer, "eos_token", None) or ""
        self._special_cache = None

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

    # -- generation ------------------------------------------------------------
    def _sampling(self, params: SamplingParams, n: int):
        return self._vllm.SamplingParams(
            n=n, temperature=params.temperature, top_p=params.top_p,
            top_k=params.top_k if params.top_k > 0 else -1, seed=params.seed,
            max_tokens=params.max_tokens, stop=list(params.stop) or None, logprobs=params.logprobs,
        )

    def _run(self, prompt: str, params: SamplingParams, n: int) -> list[list[Chunk]]:
        params.validate()
        if params.hidden_states:
            self.require({"hidden_states"}, "hidden_states=True")
        if self.llm is None:
            raise ConfigError("this backend has been closed")
        ids = self.encode(prompt)
        try:
            outs = self.llm.generate([{"prompt_token_ids": ids}], self._sampling(params, n), use_tqdm=False)
        except (ValueError, RuntimeError) as exc:
            raise BackendUnavailableError(f"vLLM failed while generating: {exc}") from exc
        return [self._chunks(o, params.logprobs) for o in outs[0].outputs]

    def stream(self, prompt: str, params: SamplingParams) -> Iterator[Chunk]:
        yield from self._run(prompt, params, 1)[0]

    def generate(self, prompt: str, params: SamplingParams, n: int = 1) -> list[Completion]:
        if n < 1:
            raise ConfigError(f"n must be >= 1, got {n}")
        if params.temperature == 0:  # greedy samples are identical; older vLLM refuses n>1 here
            one = Completion.from_chunks(self._run(prompt, params, 1)[0])
            return [one] + [copy.deepcopy(one) for _ in range(n - 1)]
        return [Completion.from_chunks(c) for c in self._run(prompt, params, n)]

    def _chunks(self, out, k: int | None) -> list[Chunk]:
        """One chunk per token of a vLLM CompletionOutput; the texts add up to `out.text`."""
        toks = list(out.token_ids)
        text = out.text
        finish = "length" if out.finish_reason == "length" else "stop"
        if not toks:
            return [Chunk(text, [], finish_reason=finish)]
        dec = _Detok(lambda t: self.tokenizer.decode(t, skip_special_tokens=True), [])
        chunks, pos, decoded = [], 0, 0
        for i, tok in enumerate(toks):
            last = i == len(toks) - 1
            decoded += len(dec.add(tok))
            end = len(text) if last else min(decoded, len(text))
            lp, top = _logprobs(out.logprobs[i] if out.logprobs else None, tok, k)
            chunks.append(Chunk(text[pos:max(pos, end)], [tok], lp, top, finish_reason=finish if last else None))
            pos = max(pos, end)
        return chunks

    def close(self) -> None:
        self.llm = None


def _logprobs(step: dict | None, tok: int, k: int | None):
    """(chosen-token logprob, top-k dict) from vLLM's {token_id: Logprob} for one step."""
    if k is None or not step:
        return None, None
    chosen = step.get(tok)
    lp = float(chosen.logprob) if chosen is not None else None
    if not k:
        return lp, None
    ranked = sorted(step.items(), key=lambda kv: -kv[1].logprob)[:k]
    top: dict[str, float] = {}
    for tid, v in ranked:
        key = v.decoded_token if v.decoded_token is not None else str(tid)
        top.setdefault(key, float(v.logprob))
    return lp, top
