"""Greedy inference with each recipe's mechanism, with the accounting the issue asks for.

Every run returns a `LatentRun`: the generated text split at the answer mark, generated
tokens, forced marker tokens, gist tokens (overhead: evaluated, never shown), continuous
thoughts (`latent`: a forward pass each, or an assistant's vectors for SoftCoT, but no
token), the peak number of positions held in the KV cache and the forward passes. A
method cannot look cheap by hiding compute: the wall time is measured around all of it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from . import ops
from .checkpoint import ASSISTANT, BOT, EOT, PROJECTION
from .task import ANSWER_MARK, prompt_text


@dataclass
class LatentRun:
    text: str = ""
    prompt_tokens: int = 0
    thinking_tokens: int = 0
    answer_tokens: int = 0
    forced_tokens: int = 0
    overhead_tokens: int = 0
    latent_steps: int = 0
    peak_context: int = 0
    forward_passes: int = 0
    finish_reason: str = "stop"
    trace: list[dict[str, Any]] = field(default_factory=list)


_EXTRAS: dict[tuple, Any] = {}
_EXTRAS_LOCK = threading.Lock()


def _extras(ckpt: Path, meta: dict, model, device) -> dict:
    """Projection and assistant of a checkpoint, loaded once per (directory, model object)."""
    torch = ops.torch_mod()
    key = (str(ckpt.resolve()), id(model))
    with _EXTRAS_LOCK:
        if key in _EXTRAS:
            return _EXTRAS[key]
        out: dict[str, Any] = {}
        if meta.get("recipe") == "softcot":
            import transformers

            adir = ckpt / ASSISTANT
            if not (adir / "config.json").is_file():
                raise ConfigError(f"softcot checkpoint '{ckpt}' has no assistant model in {adir}")
            out["atok"] = transformers.AutoTokenizer.from_pretrained(adir)
            out["amodel"] = transformers.AutoModelForCausalLM.from_pretrained(adir, dtype=model.dtype).to(device).eval()
        if meta.get("inference", {}).get("projection"):
            p = ckpt / PROJECTION
            if not p.is_file():
                raise ConfigError(f"checkpoint '{ckpt}' has no {PROJECTION}")
            state = torch.load(p, map_location="cpu")
            h_in, h_out = state["0.weight"].shape[1], state["2.weight"].shape[0]
            proj = ops.make_projection(h_in, h_out, 1.0)
            proj.load_state_dict(state)
            out["projection"] = proj.to(device=device, dtype=model.dtype).eval()
        _EXTRAS[key] = out
        return out


class _Decoder:
    """Greedy decoding on a `Stepper`, tracking where the answer mark starts."""

    def __init__(self, tok, stepper: ops.Stepper, eos_ids: set[int]):
        self.tok, self.st, self.eos = tok, stepper, eos_ids
        self.ids: list[int] = []
        self.mark_at: int | None = None

    def text(self) -> str:
        return self.tok.decode(self.ids, skip_special_tokens=True)

    def step(self, logits) -> int | None:
        """Pick the next token; None when the model ended."""
        tok = int(logits.argmax())
        if tok in self.eos:
            return None
        self.ids.append(tok)
        if self.mark_at is None and ANSWER_MARK in self.text():
            self.mark_at = len(self.ids) - 1
        return tok

    def fill(self, run: LatentRun, finish: str) -> LatentRun:
        run.text = self.text()
        n = len(self.ids)
        run.thinking_tokens = n if self.mark_at is None else self.mark_at
        run.answer_tokens = n - run.thinking_tokens
        run.peak_context, run.forward_passes = self.st.peak, self.st.forward_passes
        run.finish_reason = finish
        return run


def _eos_ids(tok, model) -> set[int]:
    ids = {tok.eos_token_id} if tok.eos_token_id is not None else set()
    gen = getattr(model.generation_config, "eos_token_id", None)
    ids.update(gen if isinstance(gen, (list, tuple)) else ([gen] if isinstance(gen, int) else []))
    return ids


def _decode(dec: _Decoder, logits, max_tokens: int, on_token=None) -> str:
    for i in range(max_tokens):
        tok = dec.step(logits)
        if tok is None:
            return "stop"
        if i + 1 == max_tokens:
            break  # the cap: the last token is never evaluated
        logits = on_token(tok) if on_token else dec.st.feed_ids([tok])[0]
    return "length"


def _ids(tok, text: str) -> list[int]:
    return list(tok.encode(text, add_special_tokens=False))


def run_plain(model, tok, meta: dict, question: str, max_tokens: int) -> LatentRun:
    """nocot-sft / cot-sft: the prompt, then greedy decoding."""
    ops.torch_mod()
    st = ops.Stepper(model, model.device)
    prompt = _ids(tok, prompt_text(question))
    logits, _ = st.feed_ids(prompt)
    dec = _Decoder(tok, st, _eos_ids(tok, model))
    return dec.fill(LatentRun(prompt_tokens=len(prompt)), _decode(dec, logits, max_tokens))


def run_continuous(model, tok, meta: dict, question: str, max_tokens: int, ckpt: Path) -> LatentRun:
    """Coconut / CODI: prompt + BOT, n continuous thoughts (the last hidden state, through
    CODI's projection, fed back as the next input), EOT, then greedy decoding."""
    inf = meta.get("inference", {})
    n = int(inf.get("n_latent", 0))
    proj = _extras(ckpt, meta, model, model.device).get("projection")
    st = ops.Stepper(model, model.device)
    prompt = _ids(tok, prompt_text(question))
    bot, eot = tok.convert_tokens_to_ids(BOT), tok.convert_tokens_to_ids(EOT)
    _, h = st.feed_ids(prompt + [bot])
    for _ in range(n):
        _, h = st.feed_embeds((proj(h) if proj is not None else h).to(model.dtype))
    logits, _ = st.feed_ids([eot])
    dec = _Decoder(tok, st, _eos_ids(tok, model))
    run = LatentRun(prompt_tokens=len(prompt), forced_tokens=2, latent_steps=n,
                    trace=[{"event": "latent", "at_token": 0, "detail": {"thoughts": n}}])
    return dec.fill(run, _decode(dec, logits, max_tokens))


def run_lightthinker(model, tok, meta: dict, question: str, max_tokens: int) -> LatentRun:
    """Decode; at each step end (a newline) write the gist tokens, then evict the step's text
    from the KV cache, so later tokens see the prompt and the gists only (as in training)."""
    gists = [tok.convert_tokens_to_ids(t) for t in meta.get("inference", {}).get("gist_tokens", [])]
    if not gists:
        raise ConfigError("lightthinker checkpoint lists no gist tokens in latent.json")
    st = ops.Stepper(model, model.device)
    prompt = _ids(tok, prompt_text(question))
    logits, _ = st.feed_ids(prompt)
    kinds = ["keep"] * len(prompt)  # what each cached position is: kept for good, or step text
    dec = _Decoder(tok, st, _eos_ids(tok, model))
    run = LatentRun(prompt_tokens=len(prompt))

    def on_token(t: int):
        if "\n" not in tok.decode([t]):
            kinds.append("text")
            return st.feed_ids([t])[0]
        out, _ = st.feed_ids([t] + gists)
        kinds.extend(["text"] + ["keep"] * len(gists))
        keep = [i for i, k in enumerate(kinds) if k == "keep"]
        run.trace.append({"event": "compress", "at_token": len(dec.ids),
                          "detail": {"evicted": len(kinds) - len(keep), "cache_after": len(keep)}})
        st.evict(keep)
        kinds[:] = ["keep"] * len(keep)
        run.overhead_tokens += len(gists)
        return out

    return dec.fill(run, _decode(dec, logits, max_tokens, on_token))


def run_softcot(model, tok, meta: dict, question: str, max_tokens: int, ckpt: Path) -> LatentRun:
    """The frozen assistant reads the question and N placeholders; the projection maps its
    hidden states there into N soft thoughts after the main model's prompt."""
    torch = ops.torch_mod()
    inf = meta.get("inference", {})
    n = int(inf.get("n_soft", 0))
    ex = _extras(ckpt, meta, model, model.device)
    amodel, atok, proj = ex["amodel"], ex["atok"], ex["projection"]
    a_ids = _ids(atok, prompt_text(question)) + [int(inf["placeholder_id"])] * n
    with torch.inference_mode():
        x = torch.tensor([a_ids], dtype=torch.long, device=amodel.device)
        h = amodel(input_ids=x, output_hidden_states=True, use_cache=False).hidden_states[-1][:, -n:]
    soft = proj(h.to(next(proj.parameters()).dtype)).to(model.dtype)
    st = ops.Stepper(model, model.device)
    prompt = _ids(tok, prompt_text(question))
    st.feed_ids(prompt)
    logits, _ = st.feed_embeds(soft)
    dec = _Decoder(tok, st, _eos_ids(tok, model))
    run = LatentRun(prompt_tokens=len(prompt), latent_steps=n,
                    trace=[{"event": "soft_thoughts", "at_token": 0,
                            "detail": {"thoughts": n, "assistant_tokens": len(a_ids)}}])
    run = dec.fill(run, _decode(dec, logits, max_tokens))
    run.forward_passes += 1  # the assistant's
    return run


def run(recipe: str, model, tok, meta: dict, question: str, max_tokens: int, ckpt: Path) -> LatentRun:
    """Dispatch on the checkpoint's recipe (inference_mode: no autograd state is kept)."""
    torch = ops.torch_mod()
    with torch.inference_mode():
        if recipe in ("nocot-sft", "cot-sft"):
            return run_plain(model, tok, meta, question, max_tokens)
        if recipe in ("coconut", "codi"):
            return run_continuous(model, tok, meta, question, max_tokens, ckpt)
        if recipe == "lightthinker":
            return run_lightthinker(model, tok, meta, question, max_tokens)
        if recipe == "softcot":
            return run_softcot(model, tok, meta, question, max_tokens, ckpt)
    raise ConfigError(f"no inference for recipe '{recipe}'")
