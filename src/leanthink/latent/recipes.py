"""The six recipes as loss functions over a batch of task examples.

Each recipe knows how to lay a batch out (see `ops.run_with_latents` and `layout`), which
parameters train, and what inference needs to know (`inference_meta`, stored in
`latent.json`). The loop that calls them (optimizer, resume, progress) is `train.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import layout, ops
from .checkpoint import BOT, EOT, gist_tokens
from .task import Example, answer_prefix, prompt_text, step_text


@dataclass
class Encoded:
    prompt: list[int]
    steps: list[list[int]]
    ans_prefix: list[int]
    answer: list[int]


class Recipe:
    name = ""
    n_stages = 1

    def __init__(self, model, tok, opts, *, assistant=None):
        self.model, self.tok, self.opts = model, tok, opts
        self.eos = tok.eos_token_id
        self.pad = tok.pad_token_id if tok.pad_token_id is not None else self.eos
        self.projection = None
        self.assistant = assistant

    def encode(self, ex: Example, tok=None) -> Encoded:
        tok = tok or self.tok

        def ids(text: str) -> list[int]:
            return list(tok.encode(text, add_special_tokens=False))

        return Encoded(ids(prompt_text(ex.question)), [ids(step_text(s)) for s in ex.steps],
                       ids(answer_prefix()), ids(ex.answer))

    def trainable(self) -> list:
        return [p for p in self.model.parameters() if p.requires_grad]

    def stage_for(self, step: int, total: int) -> int:
        return 0

    def loss(self, exs: list[Example], stage: int) -> tuple[Any, int, dict]:
        """(loss, tokens processed, named loss parts) for one batch."""
        raise NotImplementedError

    def inference_meta(self) -> dict[str, Any]:
        return {}

    # shared: prefix + tail with no latents (plain SFT)
    def _batch(self, prefixes: list[list[int]], tails: list[list[int]], skip_first: bool = False,
               n_latent: int = 0) -> ops.LatentBatch:
        pids, pmask = ops.pad_left(prefixes, self.pad)
        tids, tmask = ops.pad_right(tails, self.pad)
        labels, _ = ops.pad_right(tails, self.pad, value=-100)
        if skip_first:
            labels[:, 0] = -100
        dev = self.model.device
        return ops.LatentBatch(pids.to(dev), pmask.to(dev), tids.to(dev), tmask.to(dev), labels.to(dev), n_latent)


def _f(x) -> float:
    return float(x.detach()) if hasattr(x, "detach") else float(x)


def _ntok(batch: ops.LatentBatch) -> int:
    return int(batch.prefix_mask.sum() + batch.tail_mask.sum()) + batch.n_latent * batch.prefix_ids.shape[0]


class SFT(Recipe):
    """`cot-sft` (steps then answer) and `nocot-sft` (answer only): the baselines."""

    def __init__(self, *a, cot: bool, **kw):
        super().__init__(*a, **kw)
        self.cot = cot
        self.name = "cot-sft" if cot else "nocot-sft"

    def loss(self, exs, stage):
        enc = [self.encode(ex) for ex in exs]
        tails = [(sum(e.steps, []) if self.cot else []) + e.ans_prefix + e.answer + [self.eos] for e in enc]
        b = self._batch([e.prompt for e in enc], tails)
        out = ops.run_with_latents(self.model, b)
        ce = ops.token_ce(out.logits, b.labels)
        return ce, _ntok(b), {"ce": _f(ce)}


class LightThinker(Recipe):
    """Gist tokens after every step; the attention mask hides each finished step's text from
    everything after its gists (`layout.may_attend`)."""

    name = "lightthinker"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.gist_ids = [self.tok.convert_tokens_to_ids(t) for t in gist_tokens(self.opts.n_gist)]

    def sequence(self, e: Encoded) -> tuple[list[int], list[layout.Pos]]:
        ids = list(e.prompt)
        for s in e.steps:
            ids += s + self.gist_ids
        ids += e.ans_prefix + e.answer + [self.eos]
        pos = layout.lightthinker_positions(len(e.prompt), [len(s) for s in e.steps], len(self.gist_ids),
                                            len(e.ans_prefix) + len(e.answer) + 1)
        return ids, pos

    def loss(self, exs, stage):
        torch = ops.torch_mod()
        seqs = [self.sequence(self.encode(ex)) for ex in exs]
        n = max(len(ids) for ids, _ in seqs)
        ids = torch.tensor([s + [self.pad] * (n - len(s)) for s, _ in seqs], dtype=torch.long)
        masks, labels = [], []
        for s, pos in seqs:
            pos = pos + [layout.Pos(layout.PAD, -1)] * (n - len(s))
            masks.append(layout.lightthinker_mask(pos))
            labels.append([t if p.kind == layout.TEXT else -100 for t, p in zip(ids[len(labels)].tolist(), pos)])
        dev = self.model.device
        mask4 = torch.tensor(masks, dtype=torch.bool, device=dev)[:, None]
        lab = torch.tensor(labels, dtype=torch.long, device=dev)
        out = self.model(input_ids=ids.to(dev), attention_mask=mask4, use_cache=False)
        ce = ops.token_ce(out.logits[:, :-1], lab[:, 1:])
        return ce, sum(len(s) for s, _ in seqs), {"ce": _f(ce)}

    def inference_meta(self):
        return {"gist_tokens": gist_tokens(self.opts.n_gist), "step_end": "\n"}


class Coconut(Recipe):
    """Stage k: the first k steps become k*c continuous thoughts between BOT and EOT."""

    name = "coconut"

    def __init__(self, *a, n_steps: int, **kw):
        super().__init__(*a, **kw)
        self.n_steps = n_steps
        self.max_stage = self.opts.max_stage if self.opts.max_stage is not None else n_steps
        self.first = min(self.opts.first_stage, self.max_stage)
        self.n_stages = self.max_stage - self.first + 1
        self.bot, self.eot = (self.tok.convert_tokens_to_ids(t) for t in (BOT, EOT))

    def stage_for(self, step: int, total: int) -> int:
        per = max(total // self.n_stages, 1)
        return self.first + layout.stage_of_step(step, per, self.n_stages - 1)

    def loss(self, exs, stage):
        st = layout.coconut_stage(stage, self.n_steps, self.opts.thoughts_per_step, self.max_stage)
        enc = [self.encode(ex) for ex in exs]
        tails = [[self.eot] + sum(e.steps[st.replaced:], []) + e.ans_prefix + e.answer + [self.eos] for e in enc]
        b = self._batch([e.prompt + [self.bot] for e in enc], tails, skip_first=True, n_latent=st.n_latent)
        out = ops.run_with_latents(self.model, b)
        ce = ops.token_ce(out.logits, b.labels)
        return ce, _ntok(b), {"ce": _f(ce), "n_latent": st.n_latent}

    def inference_meta(self):
        st = layout.coconut_stage(self.max_stage, self.n_steps, self.opts.thoughts_per_step, self.max_stage)
        return {"n_latent": st.n_latent, "replaced_steps": st.replaced, "markers": [BOT, EOT]}


class CODI(Recipe):
    """Teacher (the full chain) and student (continuous thoughts) in one model; the student's
    hidden states at the token before the answer are pulled to the teacher's (L1, scaled by
    the teacher's spread, teacher side detached), plus both cross-entropies."""

    name = "codi"

    def __init__(self, *a, n_steps: int, **kw):
        super().__init__(*a, **kw)
        self.n_latent = self.opts.n_latent or n_steps * self.opts.thoughts_per_step
        self.bot, self.eot = (self.tok.convert_tokens_to_ids(t) for t in (BOT, EOT))
        h = self.model.config.hidden_size
        self.projection = ops.make_projection(h, h, ops.embedding_std(self.model)).to(self.model.device)

    def trainable(self):
        return super().trainable() + list(self.projection.parameters())

    def _thought(self, h):
        """The projection runs in fp32 (it is new and small); the model may be bf16."""
        return self.projection(h.float())

    def loss(self, exs, stage):
        torch = ops.torch_mod()
        enc = [self.encode(ex) for ex in exs]
        t_tails = [sum(e.steps, []) + e.ans_prefix + e.answer + [self.eos] for e in enc]
        tb = self._batch([e.prompt for e in enc], t_tails)
        t_out = ops.run_with_latents(self.model, tb, want_hidden=True)
        s_tails = [[self.eot] + e.ans_prefix + e.answer + [self.eos] for e in enc]
        sb = self._batch([e.prompt + [self.bot] for e in enc], s_tails, skip_first=True, n_latent=self.n_latent)
        s_out = ops.run_with_latents(self.model, sb, thought=self._thought, want_hidden=True)
        ce_t, ce_s = ops.token_ce(t_out.logits, tb.labels), ops.token_ce(s_out.logits, sb.labels)
        rows = torch.arange(len(enc), device=self.model.device)
        t_idx = torch.tensor([len(sum(e.steps, [])) + len(e.ans_prefix) - 1 for e in enc], device=self.model.device)
        s_idx = torch.tensor([len(e.ans_prefix) for e in enc], device=self.model.device)
        distill = 0.0
        for ht, hs in zip(t_out.tail_hidden[1:], s_out.tail_hidden[1:]):
            t = ht[rows, t_idx].detach().float()
            distill = distill + (hs[rows, s_idx].float() - t).abs().mean() / t.std().clamp(min=1e-6)
        distill = distill / (len(t_out.tail_hidden) - 1)
        loss = ce_s + ce_t + self.opts.distill_weight * distill
        n = _ntok(tb) + _ntok(sb)
        return loss, n, {"ce_student": _f(ce_s), "ce_teacher": _f(ce_t), "distill": _f(distill)}

    def inference_meta(self):
        return {"n_latent": self.n_latent, "markers": [BOT, EOT], "projection": True}


class SoftCoT(Recipe):
    """A frozen assistant reads the question plus N placeholders; a trainable projection maps
    its hidden states there into the frozen main model's input space as N soft thoughts,
    after which the main model writes its chain and answer (the only loss)."""

    name = "softcot"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        amodel, self.atok = self.assistant
        for m in (self.model, amodel):
            m.requires_grad_(False)
            m.eval()  # frozen: no dropout either
        self.amodel = amodel
        self.placeholder = self.atok.unk_token_id if self.atok.unk_token_id is not None else self.atok.eos_token_id
        self.projection = ops.make_projection(amodel.config.hidden_size, self.model.config.hidden_size,
                                              ops.embedding_std(self.model)).to(self.model.device)

    def trainable(self):
        return list(self.projection.parameters())

    def soft_thoughts(self, questions: list[str]):
        """[B, N, H_main] soft thoughts for the given questions (assistant frozen, no grad)."""
        torch = ops.torch_mod()
        apad = self.atok.pad_token_id if self.atok.pad_token_id is not None else self.atok.eos_token_id
        seqs = [list(self.atok.encode(prompt_text(q), add_special_tokens=False)) + [self.placeholder] * self.opts.n_soft
                for q in questions]
        ids, mask = ops.pad_left(seqs, apad)
        dev = self.amodel.device
        with torch.no_grad():
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            out = self.amodel(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev),
                              output_hidden_states=True, use_cache=False)
        h = out.hidden_states[-1][:, -self.opts.n_soft:].float()
        return self.projection(h.to(next(self.projection.parameters()).device)), int(mask.sum())

    def loss(self, exs, stage):
        enc = [self.encode(ex) for ex in exs]
        latents, a_tok = self.soft_thoughts([ex.question for ex in exs])
        tails = [sum(e.steps, []) + e.ans_prefix + e.answer + [self.eos] for e in enc]
        b = self._batch([e.prompt for e in enc], tails)
        out = ops.run_with_latents(self.model, b, latents=latents)
        ce = ops.token_ce(out.logits, b.labels)
        return ce, _ntok(b) + a_tok + latents.shape[0] * latents.shape[1], {"ce": _f(ce)}

    def inference_meta(self):
        return {"n_soft": self.opts.n_soft, "placeholder_id": self.placeholder, "projection": True}


def build(recipe: str, model, tok, opts, *, n_steps: int, assistant=None) -> Recipe:
    if recipe in ("cot-sft", "nocot-sft"):
        return SFT(model, tok, opts, cot=recipe == "cot-sft")
    if recipe == "lightthinker":
        return LightThinker(model, tok, opts)
    if recipe == "coconut":
        return Coconut(model, tok, opts, n_steps=n_steps)
    if recipe == "codi":
        return CODI(model, tok, opts, n_steps=n_steps)
    if recipe == "softcot":
        return SoftCoT(model, tok, opts, assistant=assistant)
    raise ValueError(recipe)
