"""Torch building blocks shared by training and inference.

The central one is `run_with_latents`: a batch laid out as [left-padded prefix][latent
block][right-padded tail], evaluated with a KV cache so that each continuous thought is
the previous position's last hidden state fed back as an input embedding (Coconut, CODI)
or an externally given vector (SoftCoT). Left-padding the prefix aligns the latent block
across the batch, so a whole batch takes one forward pass per thought, not per example.
Gradients flow through the cache, i.e. through every thought, as in the references.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable

warnings.filterwarnings("ignore", message=r".*past_key_values.*deprecated.*")
warnings.filterwarnings("ignore", message=r".*`past_key_values`/`cache_params` are deprecated.*")


def torch_mod():
    from ..errors import require

    return require("torch", "train", "latent reasoning")


def new_cache():
    from transformers import DynamicCache

    return DynamicCache()


def embed(model, ids):
    return model.get_input_embeddings()(ids)


def embedding_std(model) -> float:
    """Typical scale of the input embeddings: the projections' output is scaled to it, so a
    soft thought enters the model at the size a token would."""
    w = model.get_input_embeddings().weight
    return float(w.detach().float().std())


def make_projection(h_in: int, h_out: int, out_scale: float):
    """MLP + LayerNorm (as CODI's and SoftCoT's projections), the LayerNorm gain set to the
    target embeddings' scale."""
    torch = torch_mod()
    nn = torch.nn
    proj = nn.Sequential(nn.Linear(h_in, h_out), nn.GELU(), nn.Linear(h_out, h_out), nn.LayerNorm(h_out))
    with torch.no_grad():
        proj[-1].weight.fill_(out_scale)
    return proj


@dataclass
class LatentBatch:
    """Tensors of one aligned batch (see the module docstring)."""

    prefix_ids: Any  # [B, P] left-padded
    prefix_mask: Any  # [B, P]
    tail_ids: Any  # [B, T] right-padded
    tail_mask: Any  # [B, T]
    labels: Any  # [B, T]: the token each tail position must be predicted as, -100 = no loss
    n_latent: int = 0


@dataclass
class LatentOutput:
    logits: Any  # [B, T, V]: position t predicts tail token t (from the position before it)
    tail_hidden: Any | None  # tuple of [B, T, H] per layer (with want_hidden)
    cache: Any
    next_pos: Any  # [B, 1] position id of the next input
    mask: Any  # [B, L] attention mask of everything in the cache


def forward(model, *, embeds, mask, pos, cache, hidden=True):
    return model(inputs_embeds=embeds, attention_mask=mask, position_ids=pos, past_key_values=cache,
                 use_cache=True, output_hidden_states=hidden)


def run_with_latents(model, batch: LatentBatch, *, thought: Callable | None = None, latents=None,
                     want_hidden: bool = False) -> LatentOutput:
    """Prefix, then `batch.n_latent` thoughts (`thought(h)` maps the last hidden state to the
    next input, identity if None) or the given `latents` [B, N, H], then the tail."""
    torch = torch_mod()
    cache = new_cache()
    mask = batch.prefix_mask
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    out = forward(model, embeds=embed(model, batch.prefix_ids), mask=mask, pos=pos, cache=cache)
    last_logits = out.logits[:, -1:]
    next_pos = pos[:, -1:] + 1
    h = out.hidden_states[-1][:, -1:]
    if latents is not None:
        n = latents.shape[1]
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], n)], dim=1)
        lpos = next_pos + torch.arange(n, device=mask.device)[None]
        out = forward(model, embeds=latents.to(h.dtype), mask=mask, pos=lpos, cache=out.past_key_values)
        last_logits, next_pos = out.logits[:, -1:], next_pos + n
    for _ in range(batch.n_latent):
        e = thought(h) if thought is not None else h
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        out = forward(model, embeds=e.to(h.dtype), mask=mask, pos=next_pos, cache=out.past_key_values)
        h, last_logits, next_pos = out.hidden_states[-1][:, -1:], out.logits[:, -1:], next_pos + 1
    t = batch.tail_ids.shape[1]
    mask = torch.cat([mask, batch.tail_mask], dim=1)
    tpos = next_pos + torch.arange(t, device=mask.device)[None]
    out = forward(model, embeds=embed(model, batch.tail_ids), mask=mask, pos=tpos, cache=out.past_key_values,
                  hidden=want_hidden)
    logits = torch.cat([last_logits, out.logits[:, :-1]], dim=1)
    return LatentOutput(logits, out.hidden_states if want_hidden else None, out.past_key_values, tpos[:, -1:] + 1, mask)


def token_ce(logits, labels):
    """Mean cross-entropy over the labelled positions."""
    torch = torch_mod()
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                                             ignore_index=-100)


def pad_left(seqs: list[list[int]], pad: int):
    torch = torch_mod()
    n = max(len(s) for s in seqs)
    ids = torch.tensor([[pad] * (n - len(s)) + s for s in seqs], dtype=torch.long)
    mask = torch.tensor([[0] * (n - len(s)) + [1] * len(s) for s in seqs], dtype=torch.long)
    return ids, mask


def pad_right(seqs: list[list[int]], pad: int, value: int | None = None):
    torch = torch_mod()
    n = max(len(s) for s in seqs)
    fill = pad if value is None else value
    ids = torch.tensor([s + [fill] * (n - len(s)) for s in seqs], dtype=torch.long)
    mask = torch.tensor([[1] * len(s) + [0] * (n - len(s)) for s in seqs], dtype=torch.long)
    return ids, mask


# -- KV cache surgery (LightThinker) ------------------------------------------------------------
def cache_keep(cache, keep: list[int]) -> None:
    """Keep only positions `keep` of every layer's keys/values (batch of one). The keys carry
    their rotary position already, so what is kept keeps its original position."""
    torch = torch_mod()
    layers = getattr(cache, "layers", None)
    if layers is not None:
        idx = torch.tensor(keep, dtype=torch.long, device=layers[0].keys.device)
        for layer in layers:
            layer.keys = layer.keys.index_select(2, idx)
            layer.values = layer.values.index_select(2, idx)
        return
    idx = torch.tensor(keep, dtype=torch.long, device=cache.key_cache[0].device)  # transformers 4.x
    for i in range(len(cache.key_cache)):
        cache.key_cache[i] = cache.key_cache[i].index_select(2, idx)
        cache.value_cache[i] = cache.value_cache[i].index_select(2, idx)


def cache_len(cache) -> int:
    return int(cache.get_seq_length()) if cache is not None else 0


class Stepper:
    """Greedy one-sequence evaluation with a KV cache, tracking the true position ids (they run
    ahead of the cache length once LightThinker evicts) and the peak number of cached tokens."""

    def __init__(self, model, device):
        self.model, self.device = model, device
        self.torch = torch_mod()
        self.cache = new_cache()
        self.pos = 0
        self.peak = 0
        self.forward_passes = 0

    def feed_ids(self, ids: list[int]):
        x = self.torch.tensor([ids], dtype=self.torch.long, device=self.device)
        return self.feed_embeds(embed(self.model, x))

    def feed_embeds(self, e):
        """Evaluate input embeddings [1, n, H]; returns (last logits [V], last hidden [1, 1, H])."""
        torch = self.torch
        n = e.shape[1]
        held = cache_len(self.cache)
        pos = torch.arange(self.pos, self.pos + n, device=self.device)[None]
        cpos = torch.arange(held, held + n, device=self.device)
        mask = torch.ones(1, held + n, dtype=torch.long, device=self.device)
        out = self.model(inputs_embeds=e, attention_mask=mask, position_ids=pos, past_key_values=self.cache,
                         cache_position=cpos, use_cache=True, output_hidden_states=True)
        self.cache = out.past_key_values
        self.pos += n
        self.forward_passes += 1
        self.peak = max(self.peak, cache_len(self.cache))
        return out.logits[0, -1].float(), out.hidden_states[-1][:, -1:]

    def evict(self, keep: list[int]) -> None:
        cache_keep(self.cache, keep)
