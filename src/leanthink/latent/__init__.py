"""Latent and compressed reasoning (issue 16): recipes that move the thinking out of text.

* `nocot-sft`, `cot-sft`: the two baselines, same model, data and loop.
* `lightthinker`: gist tokens after each reasoning step; later tokens see only earlier gists
  (training mask), and the step text is evicted from the KV cache at inference.
* `coconut`: a curriculum that replaces the first k steps with continuous thoughts (the
  last hidden state fed back as the next input embedding).
* `codi`: one model is both teacher (full chain) and student (continuous thoughts); their
  hidden states are aligned at the token before the answer.
* `softcot`: a frozen assistant's hidden states, mapped by a trainable projection, are given
  to a frozen main model as soft thoughts.

Why a package of its own: these need hidden states as inputs, custom attention masks and KV
eviction, so they run in process on transformers only (`methods.py` says so to the user),
and they need their own training loop (TRL's trainers cannot feed vectors back as inputs).
Nothing here imports torch at module level: `leanthink` starts without the `train` extra.
"""

from __future__ import annotations

RECIPES = ("nocot-sft", "cot-sft", "lightthinker", "coconut", "codi", "softcot")
"""Every training recipe `leanthink train latent RECIPE` accepts."""

METHODS = {"latent-sft": ("nocot-sft", "cot-sft"), "lightthinker": ("lightthinker",),
           "coconut": ("coconut",), "codi": ("codi",), "softcot": ("softcot",)}
"""Inference method -> the recipes whose checkpoints it runs."""

__all__ = ["RECIPES", "METHODS"]
