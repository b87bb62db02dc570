"""Any OpenAI-compatible server: vLLM, SGLang, llama.cpp server, Ollama, hosted APIs.

Two modes:
* **completions** (full control): we render the chat template locally and send raw text
  to `/v1/completions`, so methods can continue from any prefix (force `</think>`,
  probe a trial answer) and read token logprobs. Needs the model's own chat template, so the
  prompt is the one the model gets in process: `template=` a `.gguf` file, a Hugging Face
  directory or id, a preset name, a `.jinja` file (`chat_template.load_template`), else
  `tokenizer=`'s, else a llama.cpp server's `/props`.
* **chat** (reduced): `/v1/chat/completions` only. The server applies its own template;
  methods that must edit the assistant's text mid-way are refused up front.

The API key: `api_key=KEY` in the model string works but puts the key where strings get
shown (they are redacted, see `models.redact`); `api_key_env=NAME` reads it from the
environment variable NAME; with neither, `LEANTHINK_UPSTREAM_API_KEY` is used if set.

Retries: only what can succeed on a second try (no answer at all, 502/503/504), with the
policy and the event parsing the proxy's relay shares (`backends/sse.py`). Any other
answer (a 400 for a bad field, a 500 from a crashed handler) is final and reported with
the upstream's status and message.
"""

from __future__ import annotations

import json
import os
from contextlib import closing
from typing import Any, Iterator

from ..errors import BackendUnavailableError, CapabilityError, ConfigError
from ..models import redact, register_secret
from . import chat_template, sse
from .base import BaseBackend, Capabilities, Chunk, SamplingParams

_CHAT_SENTINEL = "\x00leanthink-chat\x00"
"""In chat mode a rendered "prompt" is this sentinel + JSON messages (+ an optional
thinking prefill); `stream` turns it back into a chat request."""

FULL = Capabilities(logprobs=True, top_logprobs=True, prefix_continuation=True, hidden_states=False,
                    parallel_samples=True, token_ids=False, cancellation=True)
CHAT = Capabilities(logprobs=True, top_logprobs=True, prefix_continuation=False, hidden_states=False,
                    parallel_samples=True, token_ids=False, cancellation=True)
UPSTREAM_KEY_ENV = "LEANTHINK_UPSTREAM_API_KEY"


def resolve_api_key(api_key: str | None = None, api_key_env: str | None = None) -> str | None:
    """The upstream key: `api_key`, else the variable named by `api_key_env` (which must be
    set), else $LEANTHINK_UPSTREAM_API_KEY, else none. The value is registered for redaction."""
    if api_key and api_key_env:
        raise ConfigError("give the upstream key as api_key or api_key_env, not both")
    if api_key_env:
        key = os.environ.get(api_key_env)
        if not key:
            raise ConfigError(f"api_key_env={api_key_env}: the environment variable {api_key_env} is not set or empty")
    else:
        key = api_key or os.environ.get(UPSTREAM_KEY_ENV) or None
    register_secret(key)
    return key


class OpenAIBackend(BaseBackend):
    name = "openai"

    def __init__(self, base_url: str, model: str | None = None, *, template: str | None = None,
                 api_key: str | None = None, mode: str = "auto", max_retries: int = 2,
                 timeout: float = 600.0, connect_timeout: float = 5.0, api_key_env: str | None = None):
        import httpx

        if mode not in ("auto", "completions", "chat"):
            raise ConfigError(f"mode must be auto, completions or chat, got '{mode}'")
        self.base_url = base_url.rstrip("/")
        self.shown_url = redact(self.base_url)  # for messages: no user:pass@
        self.max_retries = max_retries
        api_key = resolve_api_key(api_key, api_key_env)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(headers=headers, timeout=httpx.Timeout(timeout, connect=connect_timeout))
        from .abortable import make_abortable

        make_abortable(self.http)  # a cancelled request stops a stalled read (see backends/abortable.py)
        models = self._get_json("/models")
        ids = [m.get("id") for m in models.get("data", []) if isinstance(m, dict)]
        if model is None:
            if not ids:
                raise ConfigError(f"server {self.shown_url} lists no models; give one as openai:{self.shown_url}#MODEL")
            model = ids[0]
        self.served_model = model
        self.model_id = model
        self.chat_template = chat_template.load_template(template) or self._server_template()
        if mode == "completions" and not self.chat_template:
            raise ConfigError(
                f"completions mode needs the model's chat template: add the model's own template, e.g. ?template=/path/model.gguf or ?template=HF_DIR "
                f"to the model string (the server at {self.shown_url} does not expose it)"
            )
        self.mode = "completions" if (mode != "chat" and self.chat_template) else "chat"
        self.capabilities = FULL if self.mode == "completions" else CHAT
        self._tokenize_route: str | None = None
        self.approximate_counts = False

    # -- HTTP helpers ----------------------------------------------------------
    def _root(self) -> str:
        return self.base_url[:-3] if self.base_url.endswith("/v1") else self.base_url

    @property
    def retry(self) -> sse.RetryPolicy:
        return sse.RetryPolicy(self.max_retries)

    def _unreachable(self, exc: sse.Unanswered) -> BackendUnavailableError:
        return BackendUnavailableError(
            f"cannot reach the OpenAI-compatible server at {self.shown_url}: {redact(str(exc.cause))}")

    def _request(self, method: str, url: str, **kw):
        """The answer, 4xx and 500 included (final: the caller reports it), after the retries
        `sse.RetryPolicy` allows."""
        try:
            return sse.send(lambda: self.http.request(method, url, **kw), self.retry)
        except sse.Unanswered as exc:
            raise self._unreachable(exc) from exc.cause

    def _get_json(self, path: str) -> dict:
        r = self._request("GET", self.base_url + path)
        if r.status_code == 401:
            raise ConfigError(f"server {self.shown_url} refused the API key (401); give it with ?api_key_env=VARNAME "
                              f"in the model string or in ${UPSTREAM_KEY_ENV}")
        if r.status_code >= 400:
            raise BackendUnavailableError(f"GET {self.shown_url}{path} answered {r.status_code}: {redact(r.text[:200])}")
        try:
            return r.json()
        except ValueError:
            raise BackendUnavailableError(f"{self.shown_url}{path} did not return JSON; is this an OpenAI-compatible /v1 URL?") from None

    def _server_template(self) -> str | None:
        """llama.cpp's native server exposes its template at /props; others do not."""
        import httpx

        try:
            r = self.http.get(self._root() + "/props", timeout=5)
            props = r.json() if r.status_code == 200 else None
        except (httpx.HTTPError, ValueError):  # no such route, or not JSON: not a llama.cpp server
            return None
        t = props.get("chat_template") if isinstance(props, dict) else None
        return t if isinstance(t, str) and t else None

    # -- tokenizer -------------------------------------------------------------
    def _tokenize_remote(self, text: str) -> list[int] | None:
        """Token ids from the server's tokenize route (leanthink's proxy, vLLM, llama.cpp),
        None if it has none. A route that is missing, or answers something else than token
        ids, is skipped; a server that cannot be reached is an error, not "no tokenizer"."""
        import httpx

        routes = [self._tokenize_route] if self._tokenize_route else [
            "extras:/extras/tokenize", "vllm:/tokenize", "llamacpp:/tokenize"]
        for route in routes:
            kind, path = route.split(":", 1)
            body: dict[str, Any] = {"extras": {"input": text, "model": self.served_model},
                                    "vllm": {"model": self.served_model, "prompt": text, "add_special_tokens": False},
                                    "llamacpp": {"content": text}}[kind]
            try:
                r = sse.send(lambda: self.http.post(self._root() + path, json=body, timeout=30), self.retry)
            except (sse.Unanswered, httpx.TransportError) as exc:  # unreachable, or timed out
                cause = getattr(exc, "cause", exc)
                raise BackendUnavailableError(
                    f"the server at {self.shown_url} did not answer a tokenize request ({path}): "
                    f"{redact(str(cause)) or type(cause).__name__}") from cause
            toks = _token_ids(r) if r.status_code == 200 else None
            if toks is not None:
                self._tokenize_route = route
                return toks
        return None

    #: `encode` of a local tokenizer matching the served model (model option `tokenizer=`).
    local_tokenizer = None

    def encode(self, text: str) -> list[int]:
        text = chat_template.neutralize(text)  # what the server will tokenize
        if self.local_tokenizer is not None:
            return self.local_tokenizer(text)
        toks = self._tokenize_remote(text)
        if toks is None:
            raise CapabilityError(f"the server at {self.base_url} has no tokenize endpoint")
        return toks

    def count_tokens(self, text: str) -> int:
        if not text:
            return 0
        text = chat_template.neutralize(text)
        if self.local_tokenizer is not None:
            return len(self.local_tokenizer(text))
        toks = None if self.approximate_counts else self._tokenize_remote(text)
        if toks is None:
            # No tokenizer endpoint (hosted APIs): estimate, and say so in results.
            self.approximate_counts = True
            return max(1, round(len(text) / 4))
        return len(toks)

    def render_chat(self, messages, add_generation_prompt=True, **kwargs) -> str:
        if self.mode == "chat":
            return _CHAT_SENTINEL + json.dumps(messages) + _CHAT_SENTINEL
        # The upstream tokenizes our text with special-token parsing and its vocabulary is unknown
        # here: content strings shaped like special tokens are marked, and neutralized when sent.
        return chat_template.render(self.chat_template, messages, model_id=self.model_id,
                                    add_generation_prompt=add_generation_prompt,
                                    specials=chat_template.upstream_specials(self.chat_template), **kwargs)

    # -- generation ------------------------------------------------------------
    def stream(self, prompt: str, params: SamplingParams) -> Iterator[Chunk]:
        params.validate()
        if prompt.startswith(_CHAT_SENTINEL):
            return self._stream_chat(prompt, params)
        if self.mode == "chat":
            raise CapabilityError(
                f"continuing from a raw prefix needs completions mode; the server at {self.shown_url} is used in chat "
                "mode because its chat template is unknown. Add the model's own template to the model string: ?template=/path/model.gguf, HF_DIR or PATH.jinja."
            )
        body = self._common(params) | {"prompt": chat_template.neutralize(prompt)}
        if params.logprobs is not None:
            body["logprobs"] = max(1, params.logprobs)  # some servers treat 0 as "off"
        return self._sse(self.base_url + "/completions", body, chat=False, keep_top=bool(params.logprobs))

    def _common(self, params: SamplingParams) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.served_model, "max_tokens": params.max_tokens, "temperature": params.temperature,
            "top_p": params.top_p, "stream": True,
        }
        if params.seed is not None:
            body["seed"] = params.seed
        if params.stop:
            body["stop"] = params.stop
        if params.top_k:
            body["top_k"] = params.top_k
        return body

    def _stream_chat(self, prompt: str, params: SamplingParams) -> Iterator[Chunk]:
        _, raw, suffix = prompt.split(_CHAT_SENTINEL, 2)
        if suffix.strip() not in ("", "<think>"):
            raise CapabilityError(
                "this method edits the assistant's text mid-way (forcing the end of thinking or probing an answer), "
                f"which the chat-only mode for {self.shown_url} cannot do. Add the model's own template: ?template=/path/model.gguf, HF_DIR or PATH.jinja "
                "to the model string to use raw completions."
            )
        body = self._common(params) | {"messages": json.loads(raw)}
        if params.logprobs is not None:
            body["logprobs"] = True
            if params.logprobs > 0:
                body["top_logprobs"] = params.logprobs
        return self._sse(self.base_url + "/chat/completions", body, chat=True, keep_top=bool(params.logprobs))

    def _sse(self, url: str, body: dict, chat: bool, keep_top: bool) -> Iterator[Chunk]:
        """POST and parse server-sent events (`sse`). Retried only before the answer starts;
        leaving the iterator closes the connection, which stops generation on the server."""
        import httpx

        def post() -> httpx.Response:
            return self.http.send(self.http.build_request("POST", url, json=body), stream=True)

        try:
            r = sse.send(post, self.retry)
        except sse.Unanswered as exc:
            raise self._unreachable(exc) from exc.cause
        with closing(r):
            if r.status_code >= 400:
                r.read()
                raise BackendUnavailableError(f"{redact(url)} answered {r.status_code}: {redact(r.text[:300])}")
            try:
                yield from self._parse(sse.iter_payloads(r.iter_bytes()), chat, keep_top)
            except sse.StreamError as exc:
                raise BackendUnavailableError(f"server error: {redact(exc.message)}") from None
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.ReadTimeout) as exc:
                raise BackendUnavailableError(f"the server at {self.shown_url} failed mid-stream: {redact(str(exc))}") from exc

    def _parse(self, payloads: Iterator[Any], chat: bool, keep_top: bool) -> Iterator[Chunk]:
        in_reasoning_field = False
        for obj in payloads:
            if not isinstance(obj, dict):
                raise BackendUnavailableError(f"the server at {self.shown_url} sent an event that is not an object: "
                                              f"{redact(json.dumps(obj))[:200]}")
            for choice in obj.get("choices", [])[:1]:
                finish = choice.get("finish_reason")
                if chat:
                    delta = choice.get("delta") or {}
                    reasoning = delta.get("reasoning_content") or delta.get("reasoning") or ""
                    text = delta.get("content") or ""
                    out = ""
                    if reasoning:
                        in_reasoning_field = True
                        out += reasoning
                    if text:
                        if in_reasoning_field:  # server split reasoning for us: re-join with the marker
                            out += "\n</think>\n\n"
                            in_reasoning_field = False
                        out += text
                    lp, top = _chat_logprobs(choice.get("logprobs"))
                else:
                    out = choice.get("text") or ""
                    lp, top = _completion_logprobs(choice.get("logprobs"))
                if out or finish:
                    yield Chunk(out, [], lp, top if keep_top else None, finish_reason=_finish(finish))

    def close(self) -> None:
        self.http.close()


def _token_ids(r) -> list[int] | None:
    """The ids of a tokenize answer (`{"tokens": [3, 4]}`, or llama.cpp's `[{"id": 3,
    "piece": ...}]`), None if it is not one (another server's route of the same name)."""
    try:
        toks = r.json().get("tokens")
    except (ValueError, AttributeError):  # not JSON, or not an object
        return None
    if not isinstance(toks, list):
        return None
    ids = [t.get("id") if isinstance(t, dict) else t for t in toks]
    return ids if all(isinstance(i, int) and not isinstance(i, bool) for i in ids) else None


def _finish(f: str | None) -> str | None:
    if f is None:
        return None
    return "length" if f == "length" else "stop"


def _completion_logprobs(lp: dict | None):
    if not lp:
        return None, None
    tl = lp.get("token_logprobs") or []
    tops = lp.get("top_logprobs") or []
    return (tl[-1] if tl else None), (tops[-1] if tops else None)


def _chat_logprobs(lp: dict | None):
    if not lp or not lp.get("content"):
        return None, None
    item = lp["content"][-1]
    top = {t["token"]: t["logprob"] for t in item.get("top_logprobs") or []} or None
    return item.get("logprob"), top
