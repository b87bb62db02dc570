"""The task's model loader (`leanthink.loading`): what methods may load, and from where.

Pure Python: engines are replaced by `ScriptedBackend`s, so nothing here loads weights.
"""

from __future__ import annotations

import ast
import gc
import json
import sys
from pathlib import Path

import pytest

import leanthink.loading as loading
from leanthink import api, solve
from leanthink.backends.base import Capabilities, SamplingParams
from leanthink.errors import ConfigError
from leanthink.loading import DEFAULT_SMALL_MODEL, LocalLoader, ModelLoader, RegisteredLoader
from leanthink.methods import Task, get_method

from .fakes import ScriptedBackend

SRC = Path(__file__).resolve().parents[1] / "src" / "leanthink"


def probe_json(path: Path, dim: int = 4, bias: float = 40.0) -> Path:
    """A valid probe file (zero weights: P(correct) = sigmoid(bias) everywhere)."""
    path.write_text(json.dumps({"format": "leanthink-probe/1", "model_id": "scripted-qwen2.5", "weights": [0.0] * dim,
                                "mean": [0.0] * dim, "std": [1.0] * dim, "bias": bias, "step_delimiter": "\n"}))
    return path


@pytest.fixture
def fake_loads(monkeypatch):
    """`load_backend` replaced by a counter that builds scripted backends."""
    calls: list[str | None] = []

    def fake(model, quiet=False):
        calls.append(model)
        return ScriptedBackend(lambda p: "5}", model_id=f"fake:{model}")

    monkeypatch.setattr(loading, "load_backend", fake)
    return calls


# -- the library loader --------------------------------------------------------------------


def test_local_loader_caches_and_bounds_the_models_it_keeps(fake_loads):
    lo = LocalLoader(max_models=2)
    a = lo.load("a")
    assert lo.load("a") is a and fake_loads == ["a"]  # loaded once
    lo.load("b")
    lo.load("a")  # a is now the most recent
    lo.load("c")  # evicts b
    assert list(lo.cache) == ["a", "c"] and len(lo.cache) == 2
    gc.collect()
    lo.load("b")
    assert fake_loads == ["a", "b", "c", "b"]  # b was dropped and nobody held it: loaded again
    assert len(lo.cache) == 2


def test_local_loader_reuses_an_evicted_model_that_is_still_in_use(fake_loads):
    lo = LocalLoader(max_models=1)
    held = lo.load("a")
    lo.load("b")  # evicts a from the LRU, but `held` keeps it alive
    assert lo.load("a") is held and fake_loads == ["a", "b"]


def test_small_is_the_default_small_model_in_the_library(fake_loads):
    lo = LocalLoader()
    assert lo.load("small").model_id == f"fake:{DEFAULT_SMALL_MODEL}"
    assert lo.load(" small ") is lo.load(DEFAULT_SMALL_MODEL) and fake_loads == [DEFAULT_SMALL_MODEL]
    with pytest.raises(ConfigError):
        lo.load("  ")


def test_api_get_backend_shares_the_library_cache(fake_loads):
    be = api.get_backend("some-model")
    assert api.get_backend("some-model") is be and api._BACKENDS["some-model"] is be
    assert loading.default_loader().load("some-model") is be and fake_loads == ["some-model"]
    api._BACKENDS.pop("some-model")


def test_local_loader_reads_probe_files(tmp_path):
    p = probe_json(tmp_path / "p.json", dim=3)
    lo = LocalLoader()
    assert lo.probe(str(p)).dim == 3
    with pytest.raises(ConfigError, match="does not exist"):
        lo.probe(str(tmp_path / "nope.json"))


# -- the server's loader -------------------------------------------------------------------


def test_registered_loader_knows_only_its_names(tmp_path, monkeypatch):
    small = ScriptedBackend(lambda p: "x")
    probe = loading.load_probe(probe_json(tmp_path / "p.json"))
    reg = RegisteredLoader({"small": small}, {"sure": probe})
    assert reg.load("small") is small and reg.probe("sure") is probe

    def boom(*a, **k):
        raise AssertionError("a refused name must not be loaded")

    monkeypatch.setattr(loading, "load_backend", boom)
    monkeypatch.setattr(loading, "load_probe", boom)
    existing = tmp_path / "m.gguf"
    existing.write_bytes(b"GGUF")
    messages = set()
    for value in (str(existing), str(tmp_path / "missing.gguf"), "openai:http://127.0.0.1:9/v1#x?template=/etc/passwd",
                  "qwen2.5-coder-0.5b?n_ctx=131072"):
        with pytest.raises(ConfigError) as e:
            reg.load(value)
        assert value not in str(e.value) and "127.0.0.1" not in str(e.value)
        messages.add(str(e.value))
    assert len(messages) == 1 and "small" in messages.pop()  # the same answer whatever the value
    probe_msgs = set()
    for value in (str(tmp_path / "p.json"), str(tmp_path / "nope.json")):
        with pytest.raises(ConfigError) as e:
            reg.probe(value)
        probe_msgs.add(str(e.value))
    assert len(probe_msgs) == 1 and "sure" in probe_msgs.pop()


def test_the_default_small_model_on_a_server_names_the_operator_flag():
    with pytest.raises(ConfigError, match="--extra-model small=MODEL"):
        RegisteredLoader().load("small")
    with pytest.raises(ConfigError, match="--extra-model NAME=MODEL"):
        RegisteredLoader().load("other")
    with pytest.raises(ConfigError, match="--probe NAME=PATH"):
        RegisteredLoader().probe("x")


# -- methods ask the task's loader -------------------------------------------------------


class Recording(ModelLoader):
    def __init__(self, backend=None, probe=None):
        self.backend, self._probe, self.asked = backend, probe, []

    def load(self, name):
        self.asked.append(("model", name))
        return self.backend

    def probe(self, name):
        self.asked.append(("probe", name))
        return self._probe


def test_route_and_spec_reason_load_their_small_model_through_the_task():
    large = ScriptedBackend(lambda p: "\\boxed{7}", model_id="large-qwen2.5")
    small = ScriptedBackend(lambda p: "5}", model_id="small-qwen2.5")
    rec = Recording(small)
    r = solve("What is 2+3?", method="route(small_model=tiny)", backend=large, models=rec)
    ev = next(e for e in r.trace if e.event == "route")
    assert rec.asked == [("model", "tiny")] and ev.detail["fast_model"] == "small-qwen2.5" and r.answer == "5"
    assert small.calls and not large.calls  # the sure fast answer was not escalated

    rec = Recording(ScriptedBackend(lambda p: "step one\n\n", model_id="small-qwen2.5"))
    task = Task.create("What is 2+3?", large, models=rec)
    r = get_method("spec-reason(max_steps=1,max_step_tokens=8)")(task)
    d = next(e for e in r.trace if e.event == "spec_reason").detail
    assert rec.asked == [("model", "small")]  # the default name, resolved by the task's loader
    assert d["small_model"] == "small-qwen2.5" and d["proposed"] == 1 and d["small_tokens"] > 0


def test_probe_exit_validation_reads_no_file_and_the_run_asks_the_loader(tmp_path):
    opened = []

    def hook(event, args):
        if event == "open" and str(args[0]).startswith(str(tmp_path)):
            opened.append(args[0])

    path = probe_json(tmp_path / "p.json")
    sys.addaudithook(hook)  # audit hooks cannot be removed; this one only looks at tmp_path
    m = get_method(f"probe-exit(probe={path})")
    get_method(f"probe-exit(probe={tmp_path / 'missing.json'})")  # no error: nothing is looked up yet
    assert opened == []
    assert m.resources() == [("probe", "probe", str(path))]

    class Hidden(ScriptedBackend):
        hidden_size = 4

        def hidden_states_for(self, text):
            return [[0.0] * 4]

    be = Hidden(lambda p: "a\nb\nc\n\\boxed{5}", caps=Capabilities(hidden_states=True))
    r = solve("What is 2+3?", method=f"probe-exit(probe={path},max_thinking=16)", backend=be)
    assert opened and r.finish_reason == "exit"  # the library loader read the file when the method ran
    with pytest.raises(ConfigError, match="does not exist"):
        solve("What is 2+3?", method=f"probe-exit(probe={tmp_path / 'missing.json'})", backend=be)


def test_methods_declare_what_they_load():
    assert get_method("route").resources() == [("small_model", "model", "small")]
    assert get_method("route(small_model=none)").resources() == []
    assert get_method("spec-reason(small_model=b)").resources() == [("small_model", "model", "b")]
    assert get_method("chain-of-draft+route(small_model=x)").resources() == [("small_model", "model", "x")]
    assert get_method("think").resources() == [] and get_method("sc(k=2)").resources() == []


def test_request_models_cap_and_cancel_the_extra_model():
    """The server wraps an extra model as a sibling of the request's capped backend: the
    request's token cap covers both models, and cancelling the request stops both."""
    from leanthink.server.worker import CappedBackend, RequestCancelled, RequestModels

    class StubJob:
        cancelled = False
        counted = 0

        def check(self):
            if self.cancelled:
                raise RequestCancelled("disconnect")

        def count(self, n):
            self.counted += n

    job = StubJob()
    main = ScriptedBackend(lambda p: "a b c d e f")
    extra = ScriptedBackend(lambda p: " ".join(["w"] * 100))
    capped = CappedBackend(main, 10, job)
    models = RequestModels(RegisteredLoader({"small": extra}), capped)
    assert list(capped.stream("q", SamplingParams(max_tokens=4)))  # 4 tokens of the main model
    got = list(models.load("small").stream("q", SamplingParams(max_tokens=100)))
    assert sum(c.n_tokens for c in got) == 6 and capped.used == 10 and job.counted == 10
    assert capped.hit_cap
    job.cancelled = True
    with pytest.raises(RequestCancelled):
        list(models.load("small").stream("q", SamplingParams(max_tokens=1)))
    with pytest.raises(ConfigError):
        models.load("openai:http://127.0.0.1:9/v1#x")


# -- structure -------------------------------------------------------------------------------


def import_cycles(root: Path = SRC) -> list[list[str]]:
    """Cycles of the package's import graph (every import statement, also inside functions)."""
    pkg = root.name
    mods = {}
    for f in root.rglob("*.py"):
        parts = list(f.relative_to(root.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        mods[".".join(parts[:-1] if is_pkg else parts)] = (f, is_pkg)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, (f, is_pkg) in mods.items():
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = m.split(".") if is_pkg else m.split(".")[:-1]
                if node.level > 1:
                    base = base[: len(base) - (node.level - 1)]
                mod = ".".join((base if node.level else []) + ([node.module] if node.module else []))
                names = [mod] + [f"{mod}.{a.name}" for a in node.names]
            else:
                continue
            for n in names:
                while n and n not in mods:
                    n = n.rpartition(".")[0]
                # a module importing its own package (`from . import x`) is not counted
                if n and n.startswith(pkg) and n != m and not m.startswith(n + "."):
                    graph[m].add(n)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return cycles


def test_the_package_has_no_import_cycles():
    assert import_cycles() == []
