"""The one backend wrapper: every wrapper (generation cache, a request's capped backend, a
sample's view, the streaming view) passes the `Backend` protocol on explicitly, and nothing
else: no attribute is discovered on the wrapped backend by name."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from leanthink.api import _LiveBackend
from leanthink.backends.base import BackendWrapper, BaseBackend, Capabilities, SamplingParams
from leanthink.backends.cache import CachedBackend, GenerationCache
from leanthink.errors import CapabilityError
from leanthink.methods.sampling.scheduler import SampleBackend
from leanthink.server.worker import CappedBackend

from .fakes import ScriptedBackend


class StubJob:
    cancel_reason = None

    def check(self) -> None:
        pass

    def count(self, n: int) -> None:
        pass


class Engine(ScriptedBackend):
    """A scripted engine with every optional ability, recording the thread of each call."""

    exact_continuation = True
    hidden_size = 4

    def __init__(self):
        super().__init__(lambda p: "one two three", model_id="scripted-qwen3",
                         caps=Capabilities(hidden_states=True))
        self.family_override = "qwen3"
        self.threads: list[str] = []

    def hidden_states_for(self, text):
        self.threads.append(threading.current_thread().name)
        return [[1.0] * 4]

    def encode(self, text):
        self.threads.append(threading.current_thread().name)
        return super().encode(text)


def wrappers(inner: BaseBackend, tmp_path) -> list[BackendWrapper]:
    return [CachedBackend(inner, GenerationCache(tmp_path / "g.sqlite")), CappedBackend(inner, 100, StubJob()),
            SampleBackend(inner), _LiveBackend(inner, None, threading.Event())]


def test_every_wrapper_passes_the_protocol_on(tmp_path):
    inner = Engine()
    for w in wrappers(inner, tmp_path):
        who = type(w).__name__
        assert (w.name, w.model_id, w.capabilities, w.family_override) == (
            "scripted", "scripted-qwen3", inner.capabilities, "qwen3"), who
        assert w.exact_continuation is True and w.hidden_size == 4 and w.approximate_counts is False, who
        assert w.hidden_states_for("x") == [[1.0] * 4] and w.encode("a b") == inner.encode("a b"), who
        assert w.count_tokens("a b c") == 5, who
        assert w.render_chat([{"role": "user", "content": "hi"}]) == "<user>hi</user><assistant>", who
        assert sum(c.n_tokens for c in w.stream("p", SamplingParams(max_tokens=10))) == 5, who
    inner.approximate_counts = True  # an HTTP backend learns this while it runs: read through
    assert all(w.approximate_counts for w in wrappers(inner, tmp_path))


def test_no_attribute_is_found_by_name(tmp_path):
    inner = Engine()
    for w in wrappers(inner, tmp_path):
        with pytest.raises(AttributeError):
            w.threads  # an attribute of this engine only, not of the protocol
    assert "__getattr__" not in vars(BackendWrapper)


def test_missing_abilities_have_neutral_defaults(tmp_path):
    plain = ScriptedBackend(lambda p: "x")
    for w in [plain, *wrappers(plain, tmp_path)]:
        assert w.family_override is None and w.on_text is None and w.hidden_size is None
        assert w.exact_continuation is False and w.approximate_counts is False and w.replayed_s == 0.0
        with pytest.raises(CapabilityError, match="no hidden states"):
            w.hidden_states_for("x")


def test_wrappers_own_only_what_they_add(tmp_path):
    def listen(channel, text):
        pass

    inner = Engine()
    capped = CappedBackend(inner, 100, StubJob(), listen)
    assert capped.on_text is listen and SampleBackend(capped).on_text is listen  # a sample streams to its request
    assert CappedBackend(inner, 100, StubJob()).on_text is None
    cached = CachedBackend(inner, GenerationCache(tmp_path / "g.sqlite"))
    params = SamplingParams(max_tokens=10)
    list(cached.stream("p", params))
    list(cached.stream("p", params))  # replayed
    assert cached.replayed_tokens == 5 and CappedBackend(cached, 100, StubJob()).replayed_s == cached.replayed_s


def test_a_sample_in_a_race_calls_the_engine_on_the_engine_thread():
    inner = Engine()
    with ThreadPoolExecutor(1, thread_name_prefix="engine") as ex:
        view = SampleBackend(inner, engine=ex)
        view.encode("a")
        view.hidden_states_for("a")
        chunks = list(view.stream("p", SamplingParams(max_tokens=10, temperature=0.5, seed=1)))
    assert inner.threads == ["engine_0", "engine_0"]
    assert view.generated == sum(c.n_tokens for c in chunks) == 5
