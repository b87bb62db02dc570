"""One reading of server-sent events and one retry policy for the HTTP backend and the
proxy's relay (`backends/sse.py`, issue 14 item 8). Pure: mock transports, no sockets."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from leanthink.backends import sse
from leanthink.errors import BackendUnavailableError


def _chunk(text: str) -> bytes:
    return b"data: " + json.dumps({"choices": [{"index": 0, "text": text, "finish_reason": None}]}).encode() + b"\n\n"


# -- events ----------------------------------------------------------------------------------
def test_splitter_gives_whole_events_only_whatever_the_chunking():
    raw = _chunk("a") + b": keep-alive\r\n\r\n" + _chunk("b") + b"data: [DONE]\n\n"
    for step in (1, 3, 7, len(raw)):
        s = sse.EventSplitter()
        out = [s.feed(raw[i:i + step]) for i in range(0, len(raw), step)]
        assert b"".join(out) == raw and s.rest == b""
        assert all(o == b"" or o.endswith((b"\n\n", b"\r\n\r\n")) for o in out)
    assert len(sse.split_events(raw)) == 4


@pytest.mark.parametrize("raw, expected", [
    (b'data: {"a": 1}', (None, '{"a": 1}')),
    (b'data:{"a": 1}', (None, '{"a": 1}')),            # the space after the colon is optional
    (b"data:  x", (None, " x")),                        # only one space is dropped
    (b"event: error\ndata: a\ndata: b", ("error", "a\nb")),  # data lines join with newlines
    (b": comment\r\nid: 7\r\nretry: 10", (None, None)),  # no data: nothing to deliver
])
def test_parse_event(raw, expected):
    assert sse.parse_event(raw) == expected


def test_payloads_stop_at_done_and_skip_comments():
    raw = [_chunk("a")[:10], _chunk("a")[10:] + b":ping\n\n", _chunk("b") + b"data: [DONE]\n\n" + _chunk("late")]
    assert [p["choices"][0]["text"] for p in sse.iter_payloads(raw)] == ["a", "b"]


def test_a_last_event_without_blank_line_is_delivered():
    assert [p["choices"][0]["text"] for p in sse.iter_payloads([_chunk("a"), _chunk("b").rstrip()])] == ["a", "b"]


@pytest.mark.parametrize("event, message", [
    (b'data: {"error": {"message": "context overflow", "code": 400}}\n\n', "context overflow"),
    (b'event: error\ndata: {"message": "engine died"}\n\n', "engine died"),
    (b'data: {"error": "plain text"}\n\n', "plain text"),
    (b"data: {not json\n\n", "not JSON"),
])
def test_error_events_and_unreadable_data_raise(event, message):
    with pytest.raises(sse.StreamError, match=message):
        list(sse.iter_payloads([_chunk("a"), event, _chunk("b")]))


def test_a_null_error_field_is_not_an_error():
    assert list(sse.iter_payloads([b'data: {"error": null, "x": 1}\n\n'])) == [{"error": None, "x": 1}]


# -- the retry policy ------------------------------------------------------------------------
class Answers:
    """Answers (or raises) from a list, the last one repeating; counts calls."""

    def __init__(self, *answers):
        self.answers, self.calls = list(answers), 0

    def __call__(self, *_):
        self.calls += 1
        a = self.answers[min(self.calls, len(self.answers)) - 1]
        if isinstance(a, Exception):
            raise a
        return a


def test_backoff_doubles_from_a_fifth_of_a_second():
    assert [sse.RetryPolicy(3).delay(r) for r in (1, 2, 3)] == [0.2, 0.4, 0.8]


@pytest.mark.parametrize("answers, calls, status", [
    ([httpx.Response(200)], 1, 200),
    ([httpx.Response(500)], 1, 500),                              # the upstream's final word
    ([httpx.Response(429)], 1, 429),
    ([httpx.Response(503), httpx.Response(200)], 2, 200),
    ([httpx.Response(502)], 3, 502),                              # retries spent: the last answer
    ([httpx.ConnectError("refused"), httpx.Response(200)], 2, 200),
    ([httpx.ReadError("reset"), httpx.RemoteProtocolError("closed"), httpx.Response(200)], 3, 200),
])
def test_send_and_asend_retry_the_same_way(answers, calls, status):
    slept, aslept = [], []

    async def asleep(s):
        aslept.append(s)

    async def arequest():
        return sync()

    sync = Answers(*answers)
    assert sse.send(sync, sse.RetryPolicy(2), sleep=slept.append).status_code == status
    assert sync.calls == calls and slept == [0.2, 0.4][: calls - 1]
    sync = Answers(*answers)
    assert asyncio.run(sse.asend(arequest, sse.RetryPolicy(2), sleep=asleep)).status_code == status
    assert sync.calls == calls and aslept == slept


def test_unanswered_after_the_retries_and_other_errors_at_once():
    req = Answers(httpx.ConnectError("refused"))
    with pytest.raises(sse.Unanswered) as info:
        sse.send(req, sse.RetryPolicy(1), sleep=lambda s: None)
    assert req.calls == 2 and info.value.attempts == 2 and isinstance(info.value.cause, httpx.ConnectError)
    req = Answers(httpx.ReadTimeout("slow"))  # the upstream took the request: not retried
    with pytest.raises(httpx.ReadTimeout):
        sse.send(req, sse.RetryPolicy(3), sleep=lambda s: None)
    assert req.calls == 1


# -- the HTTP backend on top of it -------------------------------------------------------------
def _backend(handler, max_retries: int = 2):
    from leanthink.backends.openai_http import OpenAIBackend

    b = OpenAIBackend.__new__(OpenAIBackend)
    b.base_url = b.shown_url = "http://up/v1"
    b.max_retries, b.served_model, b._tokenize_route = max_retries, "m", None
    b.http = httpx.Client(transport=httpx.MockTransport(handler))
    return b


class _Parts(httpx.SyncByteStream):
    def __init__(self, parts):
        self.parts = parts

    def __iter__(self):
        yield from self.parts


def _stream(b) -> list:
    return list(b._sse("http://up/v1/completions", {"prompt": "x"}, chat=False, keep_top=False))


def test_backend_stream_reads_events_split_anywhere():
    raw = _chunk("Hel") + _chunk("lo") + b'data: {"choices": [{"index": 0, "text": "", "finish_reason": "length"}]}\n\n'
    parts = [raw[i:i + 5] for i in range(0, len(raw), 5)] + [b"data: [DONE]\n\n"]
    b = _backend(lambda req: httpx.Response(200, stream=_Parts(parts)))
    chunks = _stream(b)
    assert [(c.text, c.finish_reason) for c in chunks] == [("Hel", None), ("lo", None), ("", "length")]


@pytest.mark.parametrize("event, message", [
    (b'data: {"error": {"message": "KV cache full"}}\n\n', "server error: KV cache full"),
    (b"data: <html>oops</html>\n\n", "server error: the server sent an event that is not JSON"),
    (b"data: [1, 2]\n\n", "not an object"),
])
def test_backend_stream_errors_are_not_skipped(event, message):
    """Before: a non-JSON event was skipped silently (its text lost)."""
    b = _backend(lambda req: httpx.Response(200, content=_chunk("a") + event + _chunk("b")))
    it = b._sse("http://up/v1/completions", {}, chat=False, keep_top=False)
    assert next(it).text == "a"
    with pytest.raises(BackendUnavailableError, match=message):
        next(it)


def test_backend_stream_retries_before_the_answer_only():
    h = Answers(httpx.ConnectError("refused"), httpx.Response(200, content=_chunk("ok")))
    assert [c.text for c in _stream(_backend(h))] == ["ok"]
    assert h.calls == 2


def test_tokenize_routes():
    """Routes that do not exist or answer something else are skipped; ids are exact."""
    seen = []

    def handler(req):
        seen.append(req.url.path)
        if req.url.path == "/extras/tokenize":
            return httpx.Response(404)
        if req.url.path == "/tokenize" and b'"prompt"' in req.content:
            return httpx.Response(200, json={"tokens": "not a list"})
        return httpx.Response(200, json={"tokens": [{"id": 5, "piece": "a"}, {"id": 6, "piece": "b"}]})

    b = _backend(handler)
    assert b._tokenize_remote("ab") == [5, 6] and b._tokenize_route == "llamacpp:/tokenize"
    assert seen == ["/extras/tokenize", "/tokenize", "/tokenize"]
    assert _backend(lambda req: httpx.Response(200, json={"tokens": [1, None]}))._tokenize_remote("x") is None


def test_tokenize_on_an_unreachable_server_is_an_error_not_no_tokenizer():
    """Before: `except Exception: continue` made it "no tokenize endpoint" and token counts
    silently became estimates."""
    h = Answers(httpx.ConnectError("refused"))
    b = _backend(h, max_retries=1)
    with pytest.raises(BackendUnavailableError, match="did not answer a tokenize request.*refused"):
        b._tokenize_remote("x")
    assert h.calls == 2  # the policy's retries, then the first route's failure is final
    b.local_tokenizer, b.approximate_counts = None, False
    with pytest.raises(BackendUnavailableError):
        b.count_tokens("hello")
    assert b.approximate_counts is False
