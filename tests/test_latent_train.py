"""Latent reasoning (issue 16) with real models: every recipe trains on smollm2-135m and its
loss falls; the mechanisms are checked on a tiny random-init Llama with SmolLM2's tokenizer
(fast to train and save): LightThinker's KV eviction equals its training mask, Coconut's
stages build the right sequences, SoftCoT leaves both models unchanged, and every inference
method runs end to end through `leanthink.solve` on a trained checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from leanthink.latent import RECIPES

pytestmark = pytest.mark.slow

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def smol_dir():
    from leanthink.train.export import hf_model_dir

    return hf_model_dir("smollm2-135m", log=lambda m: None)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, smol_dir):
    """A 2-layer random Llama with SmolLM2's tokenizer: mechanics, not quality."""
    out = tmp_path_factory.mktemp("tiny")
    tok = transformers.AutoTokenizer.from_pretrained(smol_dir)
    cfg = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                                   tie_word_embeddings=True, eos_token_id=tok.eos_token_id,
                                   pad_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


def _opts(**kw):
    from leanthink.latent.train import LatentOptions

    base = dict(steps=6, batch_size=2, n_train=2, lr=1e-4, proj_lr=1e-3, log_every=1, save_every=100, threads=2,
                dtype="float32")
    return LatentOptions(**{**base, **kw})


@pytest.mark.parametrize("recipe", RECIPES)
def test_each_recipe_lowers_the_loss_on_smollm2(recipe, tmp_path, smol_dir):
    """The same two examples every step: the loss must fall (SoftCoT: the projection alone)."""
    from leanthink.latent.train import train_latent

    kw = {"proj_lr": 3e-3} if recipe == "softcot" else {}
    if recipe == "coconut":
        kw = {"first_stage": 3, "max_stage": 3}  # the all-latent stage, so every step runs the mechanism
    meta = train_latent(recipe, smol_dir, str(tmp_path / recipe), _opts(**kw), log=lambda m: None)
    losses = [json.loads(line)["loss"] for line in (tmp_path / recipe / "progress.jsonl").read_text().splitlines()]
    assert len(losses) == 6 and losses[-1] < losses[0], losses
    assert meta["recipe"] == recipe and meta["tokens_per_s"] > 0 and meta["train_s"] > 0
    assert json.loads((tmp_path / recipe / "latent.json").read_text())["base_model"] == smol_dir


def _train_tiny(recipe, tiny_dir, out, **kw):
    from leanthink.latent.train import train_latent

    return train_latent(recipe, tiny_dir, str(out), _opts(**{"lr": 3e-3, "proj_lr": 3e-3, "n_train": 8, **kw}),
                        log=lambda m: None)


def test_lightthinker_eviction_equals_the_training_mask(tiny_dir):
    """Logits after evicting a step's text from the KV cache equal those of the full sequence
    under LightThinker's mask: inference sees exactly what training saw."""
    from leanthink.latent import layout, ops

    m = transformers.AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32).eval()
    prompt, step, gists, nxt = [10, 11, 12], [20, 21, 22], [30, 31], [40, 41]
    pos = layout.lightthinker_positions(len(prompt), [len(step)], len(gists), len(nxt))
    ids = torch.tensor([prompt + step + gists + nxt])
    mask = torch.tensor(layout.lightthinker_mask(pos))[None, None]
    with torch.no_grad():
        full = m(input_ids=ids, attention_mask=mask).logits[0, -len(nxt):]
        st = ops.Stepper(m, "cpu")
        st.feed_ids(prompt + step + gists)
        assert st.peak == 8
        st.evict(layout.kept_after_compression(pos[:8], 1))
        got = [st.feed_ids([t])[0] for t in nxt]
    assert torch.allclose(torch.stack(got), full, atol=1e-4)
    assert ops.cache_len(st.cache) == 7 and st.pos == 10


def test_coconut_stages_feed_the_right_steps(tiny_dir, tmp_path, monkeypatch):
    """Stage k: k continuous thoughts, and the tail holds the steps from k on, then the answer."""
    from leanthink.latent import ops, train

    seen = []
    real = ops.run_with_latents

    def spy(model, batch, **kw):
        seen.append((batch.n_latent, batch.tail_ids[0].tolist(), batch.tail_mask[0].tolist()))
        return real(model, batch, **kw)

    monkeypatch.setattr(ops, "run_with_latents", spy)
    _train_tiny("coconut", tiny_dir, tmp_path / "c", steps=8, n_train=1, batch_size=1)
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "c")
    ex = train.train_examples(train.parse_task("chain"), 1, 0)[0]
    for i, (n_latent, tail, mask) in enumerate(seen):
        k = i // 2  # 8 steps over 4 stages
        text = tok.decode([t for t, keep in zip(tail, mask) if keep])
        assert n_latent == k
        assert text == "<|end-latent|>" + "".join(s + "\n" for s in ex.steps[k:]) + f"#### {ex.answer}" + tok.eos_token
    meta = json.loads((tmp_path / "c" / "latent.json").read_text())
    assert meta["inference"]["n_latent"] == 3


def test_softcot_leaves_both_models_unchanged(tiny_dir, tmp_path):
    from leanthink.latent.recipes import SoftCoT

    before = {k: v.clone() for k, v in transformers.AutoModelForCausalLM.from_pretrained(tiny_dir).state_dict().items()}
    captured = {}
    real_init = SoftCoT.__init__

    def init(self, *a, **kw):
        real_init(self, *a, **kw)
        captured["recipe"] = self

    SoftCoT.__init__ = init
    try:
        meta = _train_tiny("softcot", tiny_dir, tmp_path / "s")
    finally:
        SoftCoT.__init__ = real_init
    rec = captured["recipe"]
    for model in (rec.model, rec.amodel):
        for k, v in model.state_dict().items():
            assert torch.equal(v, before[k]), k
    assert meta["loss_last"] != meta["loss_first"]  # the projection did train
    saved = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "s" / "assistant").state_dict()
    assert all(torch.equal(saved[k], before[k]) for k in before if k in saved)


def test_resume_continues_where_it_stopped(tiny_dir, tmp_path):
    from leanthink.latent.train import train_latent

    out = tmp_path / "r"
    with pytest.raises(RuntimeError):
        def boom(msg):
            if msg.startswith("step 4/"):
                raise RuntimeError("killed")
        train_latent("cot-sft", tiny_dir, str(out), _opts(steps=6, save_every=2, lr=3e-3), log=boom)
    assert json.loads((out / "state" / "state.json").read_text())["step"] == 2
    lines = []
    meta = train_latent("cot-sft", tiny_dir, str(out), _opts(steps=6, save_every=2, lr=3e-3), resume=True,
                        log=lines.append)
    assert lines[0] == "resuming at step 2/6" and meta["steps"] == 6 and not (out / "state").exists()


@pytest.fixture(scope="module")
def tiny_checkpoints(tiny_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpts")
    for r in RECIPES:
        _train_tiny(r, tiny_dir, root / r, steps=3)
    return root


@pytest.mark.parametrize("recipe,method", [("nocot-sft", "latent-sft"), ("cot-sft", "latent-sft"),
                                           ("lightthinker", "lightthinker"), ("coconut", "coconut"),
                                           ("codi", "codi"), ("softcot", "softcot")])
def test_each_inference_method_runs_end_to_end(tiny_checkpoints, recipe, method):
    import leanthink

    ckpt = str(tiny_checkpoints / recipe)
    res = leanthink.solve("5+8-3+9", model=ckpt, method=f"{method}(max_tokens=12)")
    meta = json.loads((Path(ckpt) / "latent.json").read_text())
    u = res.usage
    assert res.method.startswith(method) and res.backend == "transformers" and res.latency_s > 0
    assert u.prompt > 0 and u.thinking + u.answer <= 12
    n_latent = {"coconut": 3, "codi": 3, "softcot": meta["inference"].get("n_soft", 0)}.get(recipe, 0)
    assert u.latent == n_latent and u.total == u.thinking + u.answer + u.forced + u.overhead
    markers = 2 if recipe in ("coconut", "codi") else 0
    assert u.forced == markers
    generated = u.thinking + u.answer
    held = u.prompt + markers + n_latent + generated - (1 if res.finish_reason == "length" else 0)
    if recipe != "lightthinker":  # everything stays in the cache (a capped last token is never fed)
        assert res.peak_context == held
    else:
        assert res.peak_context <= u.prompt + u.overhead + generated


def test_lightthinker_inference_evicts_at_step_ends(tiny_checkpoints, monkeypatch):
    """Force the decoder to write two step lines: each newline writes the gists and drops the
    step's text, so the peak stays below what plain decoding holds."""
    from leanthink.latent import infer

    ckpt = tiny_checkpoints / "lightthinker"
    model = transformers.AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32).eval()
    tok = transformers.AutoTokenizer.from_pretrained(ckpt)
    script = iter(tok.encode("1+2=3\n3+4=7\n#### 7", add_special_tokens=False) + [tok.eos_token_id])
    monkeypatch.setattr(infer._Decoder, "step", _scripted_step(script))
    meta = json.loads((ckpt / "latent.json").read_text())
    run = infer.run("lightthinker", model, tok, meta, "1+2+4", 40, ckpt)
    assert run.text == "1+2=3\n3+4=7\n#### 7"
    assert [t["event"] for t in run.trace] == ["compress", "compress"]
    assert run.overhead_tokens == 4
    n_gen = len(tok.encode(run.text, add_special_tokens=False))
    assert run.peak_context < run.prompt_tokens + n_gen + run.overhead_tokens
    assert run.peak_context == run.prompt_tokens + 2 + 6 + 2  # prompt, 1st gists, 2nd step + its gists


def _scripted_step(script):
    def step(self, logits):
        tok = next(script)
        if tok in self.eos:
            return None
        self.ids.append(tok)
        if self.mark_at is None and "####" in self.text():
            self.mark_at = len(self.ids) - 1
        return tok
    return step


def test_lora_run_is_merged_into_a_plain_checkpoint(tiny_dir, tmp_path):
    """LoRA (with the new gist tokens' embeddings trainable) trains far fewer parameters and
    is merged at the end: the checkpoint is an ordinary model directory that runs."""
    import leanthink

    lines = []
    from leanthink.latent.train import train_latent

    meta = train_latent("lightthinker", tiny_dir, str(tmp_path / "l"), _opts(lr=3e-3, n_train=2, lora_r=4),
                        log=lines.append)
    trainable = int(next(s for s in lines if "trainable parameters" in s).split(" trainable")[0].split(", ")[-1].replace(",", ""))
    assert trainable < 50_000 and meta["loss_last"] < meta["loss_first"]
    assert not (tmp_path / "l" / "adapter_config.json").exists()
    res = leanthink.solve("1+2+3+4", model=str(tmp_path / "l"), method="lightthinker(max_tokens=4)")
    assert res.usage.thinking + res.usage.answer <= 4 and res.peak_context > 0
