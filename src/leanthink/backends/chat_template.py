"""Render a Hugging Face-style Jinja chat template to raw text, locally, safely.

Rendering locally (instead of letting the server do it) is what gives us full control:
we can append a partial assistant turn and continue from it.

It also makes us responsible for chat-template injection. A rendered prompt is text in
which control tokens (`<|im_start|>`, `<|im_end|>`, `</think>`) are written as strings,
and engines tokenize it with special-token parsing so the template's own markers become
control tokens. Message content is text: a user who writes `<|im_end|>\\n<|im_start|>
assistant\\n` must not get a forged assistant turn. So, before rendering, every
special-token string inside message content is *marked*: `s[0] + LIT_OPEN + s[1:] +
LIT_CLOSE`, with two Unicode noncharacters (U+FDD0/U+FDD1, reserved by Unicode for
process-internal use; any in the content are replaced by U+FFFD first). Why a mark in
the text rather than a separate span list: prompts travel through methods as plain
strings (`prompt + reasoning + inject`, wrappers, caches), and an in-text mark survives
all of that, while a span list would be lost by the first concatenation. The marked
form never contains the special string itself, so it is also safe for any consumer that
does not know the marks (the template's own logic, e.g. `'</think>' in content`, does
not fire on it either). Then:

* local engines (llama.cpp, transformers, vLLM) tokenize the text between marks with
  special-token parsing, and each marked string as plain text (`encode_prompt`): the
  model sees exactly the user's characters, as ordinary tokens;
* an upstream server that tokenizes our text itself (OpenAI-compatible completions
  mode) gets `neutralize(prompt)`: `s[0]` + WORD JOINER (U+2060) + `s[1:]`. U+2060 is
  invisible and, unlike ZERO WIDTH JOINER, never changes how neighbouring characters
  render, so the text looks the same but cannot match the special token;
* `Result.prompt` keeps the marks (the oracle replays it); `unmark(prompt)` gives the
  user's original text for display.

Separate pieces are tokenized separately, so tokens at their boundaries can differ from a
one-piece tokenization (a SentencePiece vocabulary may also add its space prefix there);
this only happens when content holds special-token strings. Prompts without them are
tokenized exactly as before.

Rendering itself happens in the Jinja environment chat templates are written for
(`template_env`: Hugging Face's, rebuilt), with the inputs transformers gives templates.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Callable, Iterable

from ..errors import ConfigError, LeanthinkError

LIT_OPEN, LIT_CLOSE = "\ufdd0", "\ufdd1"
WORD_JOINER = "\u2060"
_LITERAL = re.compile(f"([^{LIT_OPEN}{LIT_CLOSE}]){LIT_OPEN}([^{LIT_OPEN}{LIT_CLOSE}]*){LIT_CLOSE}", re.S)
_MARKS = re.compile(f"[{LIT_OPEN}{LIT_CLOSE}]")

GENERIC_SPECIALS = re.compile(
    r"<\|[^<>|\s]{1,64}\|>"              # ChatML, Llama-3, Phi: <|im_end|>, <|eot_id|>
    r"|<｜[^<>｜]{1,64}｜>"                # DeepSeek: <｜Assistant｜>, <｜end▁of▁sentence｜>
    r"|</?(?:think|tool_call|tool_response|answer|s)>"
    r"|<(?:start|end)_of_turn>|<(?:bos|eos|pad|unk)>"
    r"|\[/?(?:INST|SYSTEM_PROMPT|TOOL_CALLS|AVAILABLE_TOOLS|TOOL_RESULTS)\]"
)
"""Special-token shapes of common model families, for an upstream whose vocabulary we
cannot read (OpenAI-compatible completions mode)."""

_TEMPLATE_TOKEN = re.compile(r"<[^<>\s'\"{}%]{2,64}>|\[/?[A-Z_]{2,32}\]")


class TemplateRenderError(ConfigError):
    """The chat template does not parse or fails while rendering (raise_exception, an
    undefined variable, a sandbox violation...): the template is input, so this is a
    user-facing error, not a bug."""


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


@lru_cache(maxsize=16)
def _compile(template: str):
    from .template_env import environment

    try:
        return environment().from_string(template)
    except Exception as exc:  # TemplateSyntaxError, or RecursionError on absurd nesting
        raise TemplateRenderError(f"the model's chat template does not parse: {_one_line(exc)}") from exc


def render(
    template: str | None,
    messages: list[dict[str, Any]],
    *,
    model_id: str,
    bos_token: str = "",
    eos_token: str = "",
    add_generation_prompt: bool = True,
    specials: re.Pattern | None = GENERIC_SPECIALS,
    tools: list[dict[str, Any]] | None = None,
    documents: list[dict[str, Any]] | None = None,
    **extra,
) -> str:
    """The rendered prompt, as `transformers`' `apply_chat_template(..., tokenize=False)`
    renders it (`template_env`), with special-token strings in user-supplied strings
    (messages, tools, documents) marked (see the module docstring). `specials` matches the
    engine's special-token strings; `extra` are template variables (`enable_thinking`)."""
    if not template:
        raise ConfigError(
            f"model '{model_id}' has no chat template, so a chat prompt cannot be built. "
            "Pass one with the model string option `template=PATH` (a .jinja file) or use a chat/instruct model."
        )
    for m in messages:
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ConfigError(f"each message needs 'role' and 'content', got {m!r}"[:300])
    safe = [_template_message(_plain(m, specials)) for m in messages]
    compiled = _compile(template)
    try:
        return compiled.render(
            messages=safe,
            tools=_plain(tools, specials),
            documents=_plain(documents, specials),
            add_generation_prompt=add_generation_prompt,
            **{"bos_token": bos_token, "eos_token": eos_token, **_plain(extra, None)},
        )
    except LeanthinkError:
        raise
    except Exception as exc:  # the template's own code failed: TemplateError (raise_exception,
        # UndefinedError, SecurityError) or a Python error inside it (TypeError, ZeroDivisionError...)
        from jinja2.exceptions import SecurityError, TemplateError, UndefinedError

        what = ("was stopped by the sandbox" if isinstance(exc, SecurityError)
                else "uses an undefined value" if isinstance(exc, UndefinedError)
                else "failed" if isinstance(exc, TemplateError) else f"failed ({type(exc).__name__})")
        raise TemplateRenderError(f"the chat template of '{model_id}' {what}: {_one_line(exc)}") from exc


_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")
"""Names a message's reasoning goes by; templates read `reasoning_content` (Qwen3) or `thinking`."""


def _template_message(m: dict[str, Any]) -> dict[str, Any]:
    """A message as transformers hands it to the template: keys whose value is None dropped
    (a template handles a missing key, not a `None` one: `content: null` with tool calls),
    and the reasoning, under whichever name it came, under both names templates read."""
    m = {k: v for k, v in m.items() if v is not None}
    reasoning = next((m[k] for k in _REASONING_FIELDS if k in m), None)
    if reasoning is not None:
        m = {"thinking": reasoning, **m, "reasoning_content": reasoning}
    return m


# -- marking special-token strings in content -----------------------------------------
def mark(text: str, specials: re.Pattern | None) -> str:
    """`text` with stray marks replaced and every match of `specials` marked as literal."""
    text = _MARKS.sub("\ufffd", text)
    if specials is None:
        return text
    return specials.sub(lambda m: _marked(m.group(0)), text)


def _marked(s: str) -> str:
    return s[0] + LIT_OPEN + s[1:] + LIT_CLOSE if s else s


def _plain(v: Any, specials: re.Pattern | None) -> Any:
    """What a template may see: plain JSON-like data, strings marked (`mark`; not when
    `specials` is None and nothing needs it). As in transformers, subclasses of str/int/float
    are reduced to the base type and any other object (an image, a tensor, a model) becomes
    a `<TypeName>` placeholder: the sandbox does not know which of their methods are unsafe."""
    if v is None or type(v) in (bool, int, float):
        return v
    if isinstance(v, str):
        return mark(str.__str__(v), specials)
    if isinstance(v, int):
        return int.__int__(v)
    if isinstance(v, float):
        return float.__float__(v)
    if isinstance(v, dict):
        return {_plain(k, None): _plain(x, specials) for k, x in v.items()}
    if isinstance(v, list):
        return [_plain(x, specials) for x in v]
    if isinstance(v, tuple):
        return tuple(_plain(x, specials) for x in v)
    if type(v).__module__ == "numpy" and callable(getattr(v, "item", None)) and getattr(v, "ndim", None) == 0:
        return _plain(v.item(), specials)  # np.bool_(False) must not become a truthy placeholder
    if callable(getattr(v, "model_dump", None)):  # pydantic models (e.g. the openai SDK's messages)
        return _plain(v.model_dump(), specials)
    import dataclasses

    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {f.name: _plain(getattr(v, f.name), specials) for f in dataclasses.fields(v)}
    return f"<{type(v).__name__}>"


def unmark(prompt: str) -> str:
    """The prompt as the user wrote it: marks removed, marked strings restored."""
    if LIT_OPEN not in prompt and LIT_CLOSE not in prompt:
        return prompt
    return _MARKS.sub("", _LITERAL.sub(r"\1\2", prompt))


def neutralize(prompt: str) -> str:
    """For an upstream that tokenizes our text: marked strings become `s[0]` + U+2060 + `s[1:]`."""
    if LIT_OPEN not in prompt and LIT_CLOSE not in prompt:
        return prompt
    return _MARKS.sub("", _LITERAL.sub(lambda m: m.group(1) + WORD_JOINER + m.group(2), prompt))


def split_literals(prompt: str) -> list[tuple[str, bool]]:
    """[(text, is_literal)]: template text (parse special tokens) and marked content strings
    (plain text). Empty pieces are dropped; stray marks are removed."""
    out: list[tuple[str, bool]] = []
    pos = 0
    for m in _LITERAL.finditer(prompt):
        before = _MARKS.sub("", prompt[pos:m.start()])
        if before:
            out.append((before, False))
        out.append((m.group(1) + m.group(2), True))
        pos = m.end()
    rest = _MARKS.sub("", prompt[pos:])
    if rest:
        out.append((rest, False))
    return out


def encode_prompt(
    prompt: str,
    *,
    special: Callable[[str, bool], list[int]],
    plain: Callable[[str], list[int]],
    protected: set[int],
    add_special: bool,
) -> list[int]:
    """Token ids of a rendered prompt in which no marked content string becomes a special token.

    `special(text, add_special)` tokenizes with special-token parsing (and BOS if asked);
    `plain(text)` without it. `protected` are the ids content must never produce: if plain
    tokenization still yields one (a non-special added token such as Qwen3's `</think>` is
    matched either way), the string is tokenized in smaller pieces."""
    if LIT_OPEN not in prompt and LIT_CLOSE not in prompt:
        return special(prompt, add_special)
    ids: list[int] = []
    for i, (text, literal) in enumerate(split_literals(prompt)):
        if literal:
            if i == 0 and add_special:
                ids += special("", True)
            ids += _encode_literal(text, plain, protected)
        else:
            ids += special(text, add_special and i == 0)
    return ids


def _encode_literal(text: str, plain: Callable[[str], list[int]], protected: set[int]) -> list[int]:
    ids = plain(text)
    if not protected.intersection(ids) or len(text) < 2:
        return ids
    head, rest = plain(text[0]), plain(text[1:])
    if not protected.intersection(head + rest):
        return head + rest
    return [t for ch in text for t in plain(ch)]


def specials_pattern(strings: Iterable[str]) -> re.Pattern | None:
    """A regex that matches any of `strings` (longest first), as a trie: fast even for the
    thousands of added tokens some vocabularies have. Strings shorter than 2 characters or
    made of whitespace are left out (they cannot be split, and are not control markup)."""
    trie: dict = {}
    for s in strings:
        if len(s) < 2 or not s.strip():
            continue
        node = trie
        for ch in s:
            node = node.setdefault(ch, {})
        node[""] = {}
    if not trie:
        return None

    def build(node: dict) -> str:
        alts = [re.escape(ch) + build(child) for ch, child in sorted(node.items()) if ch]
        if not alts:
            return ""
        body = alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"
        return f"(?:{body})?" if "" in node else body

    return re.compile(build(trie))


def upstream_specials(template: str | None) -> re.Pattern:
    """What to neutralize for an upstream whose vocabulary is unknown: the common special-token
    shapes plus every `<...>` / `[...]` marker the chat template itself writes."""
    found = set(_TEMPLATE_TOKEN.findall(template or ""))
    trie = specials_pattern(found)
    return re.compile(f"{trie.pattern}|{GENERIC_SPECIALS.pattern}") if trie else GENERIC_SPECIALS


def looks_like_markup(s: str) -> bool:
    """Non-special added tokens worth protecting: markup such as `</think>`, `<tool_call>`,
    not added words or whitespace runs."""
    return any(c in s for c in "<>[]|｜")


CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
"""Plain ChatML (Hugging Face's former default template), usable by name when a server hides
its template. It is not any model's own template: it renders what Qwen2.5's and SmolLM2's
templates render for a conversation that starts with a system message and has no tools,
but without one they add a default system message, and QwQ/Qwen3 templates also rewrite
past reasoning and open `<think>`. Prefer the model's own template (`template=`)."""

BUILTIN_TEMPLATES = {"chatml": CHATML}


# -- where a template comes from ------------------------------------------------------------------
_MAX_TEMPLATE_BYTES = 1 << 20
"""Real chat templates are a few KiB; a cap keeps a wrong path (a model file) from being read whole."""


def load_template(value: str | None) -> str | None:
    """The chat template a `template=` model option names, or None if it names none.

    The point is to give an upstream server the prompt the model's own template makes (the
    same prompt as in process): a template can add a default system message (Qwen2.5,
    SmolLM2) that plain ChatML lacks. Accepted, in this order:

    * a built-in name (`chatml`: plain ChatML, no default system message);
    * an embedded preset name (`qwen2.5-coder-1.5b`, `smollm2-135m`...): its GGUF's template;
    * a `.gguf` file: the `tokenizer.chat_template` in its metadata (the file an engine serves);
    * a Hugging Face model or tokenizer directory: `chat_template.jinja`, else the
      `chat_template` of `tokenizer_config.json` (its `default` entry if there are several);
      or a `tokenizer_config.json` file;
    * any other file: the template text itself (`.jinja`);
    * a Hugging Face id (`Qwen/Qwen2.5-7B-Instruct`): its tokenizer's template, through
      `transformers` (from the local cache; needs the `transformers` extra)."""
    from pathlib import Path

    if not value:
        return None
    if value in BUILTIN_TEMPLATES:
        return BUILTIN_TEMPLATES[value]
    from ..models import PRESETS, ensure_preset_file

    if value in PRESETS:
        return _gguf_template(str(ensure_preset_file(PRESETS[value], quiet=True)), value)
    p = Path(value).expanduser()
    if p.is_file() and p.suffix.lower() == ".gguf":
        return _gguf_template(str(p), value)
    if p.is_dir():
        if (p / "chat_template.jinja").is_file():
            return _read_text(p / "chat_template.jinja", value)
        if (p / "tokenizer_config.json").is_file():
            return _config_template(p / "tokenizer_config.json", value)
        raise ConfigError(f"template directory '{value}' has neither chat_template.jinja nor tokenizer_config.json")
    if p.is_file():
        if p.name == "tokenizer_config.json":
            return _config_template(p, value)
        return _read_text(p, value)
    if "/" in value and not value.startswith((".", "/", "~")):
        return _hub_template(value)
    raise ConfigError(f"chat template '{value}' is neither a built-in ({', '.join(BUILTIN_TEMPLATES)}), a preset, "
                      "a .gguf file, a Hugging Face directory nor a template file")


def _read_text(p, value: str) -> str:
    try:
        with open(p, "rb") as f:
            data = f.read(_MAX_TEMPLATE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read chat template '{value}': {exc.strerror or exc}") from None
    if len(data) > _MAX_TEMPLATE_BYTES:
        raise ConfigError(f"chat template '{value}' is larger than {_MAX_TEMPLATE_BYTES // 1024} KiB; is it a template?")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"chat template '{value}' is not UTF-8 text") from None


def _config_template(p, value: str) -> str:
    import json

    try:
        cfg = json.loads(_read_text(p, value))
    except ValueError as exc:
        raise ConfigError(f"'{p}' is not valid JSON: {exc}") from None
    t = cfg.get("chat_template") if isinstance(cfg, dict) else None
    if isinstance(t, list):  # [{"name": "default", "template": ...}, {"name": "tool_use", ...}]
        named = {d.get("name"): d.get("template") for d in t if isinstance(d, dict)}
        t = named.get("default") or next(iter(named.values()), None)
    if not isinstance(t, str) or not t.strip():
        raise ConfigError(f"'{p}' has no chat_template")
    return t


def _gguf_template(path: str, value: str) -> str:
    from ..errors import ModelFileError, require

    llama_cpp = require("llama_cpp", "llamacpp", f"template={value}")
    try:
        llm = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
    except (ValueError, RuntimeError, OSError) as exc:
        raise ModelFileError(f"llama.cpp could not read '{value}': {exc}") from exc
    t = llm.metadata.get("tokenizer.chat_template")
    if not t:
        raise ConfigError(f"'{value}' holds no chat template (tokenizer.chat_template)")
    return t


def _hub_template(model_id: str) -> str:
    from ..errors import require

    transformers = require("transformers", "transformers", f"template={model_id}")
    try:
        tok = transformers.AutoTokenizer.from_pretrained(model_id)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load the tokenizer '{model_id}' for its chat template: {exc}") from exc
    t = getattr(tok, "chat_template", None)
    if isinstance(t, dict):
        t = t.get("default") or next(iter(t.values()), None)
    if not t:
        raise ConfigError(f"the tokenizer '{model_id}' has no chat template")
    return t
