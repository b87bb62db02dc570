"""Chat templates render exactly as the model's own tokenizer renders them (issue 14, item 7).

A prompt that differs from the training format by one space or one escaped `<` silently
costs accuracy, so `chat_template.render` must give what `transformers`'
`apply_chat_template(..., tokenize=False)` gives: same Jinja environment (`template_env`)
and same inputs (None-valued keys dropped, reasoning under both names, tools and documents).
The real templates of the families we claim (tests/chat_templates/README.md says where each
comes from; SmolLM2's and Qwen2.5's are read from the presets' GGUF files) are rendered by
both over conversations with a system message, several turns, past reasoning, tools and
tool calls, with and without the generation prompt, and with `enable_thinking`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from leanthink.backends import chat_template as ct
from leanthink.backends.chat_template import TemplateRenderError

TEMPLATES = Path(__file__).parent / "chat_templates"
REAL = {name: (TEMPLATES / f"{name}.jinja").read_text(encoding="utf-8")
        for name in ("qwen3", "qwq", "deepseek-r1-distill")}

TOOLS = [{"type": "function", "function": {
    "name": "calc", "description": "Evaluate <expr> & return 'x' \"y\" — café 数学",
    "parameters": {"type": "object", "properties": {"expr": {"type": "string"}}, "required": ["expr"]}}}]
USER = {"role": "user", "content": "What is 2+2? Use <b>bold</b> & \"quotes\" — é"}
SYSTEM = {"role": "system", "content": "You are terse."}
ANSWERED = {"role": "assistant", "content": "<think>\nadd them\n</think>\n\nIt is 4."}
USER2 = {"role": "user", "content": "And 3+3?"}
REASONED = {"role": "assistant", "content": "It is 6.", "reasoning_content": "3+3=6"}
CALL = {"role": "assistant", "content": "",
        "tool_calls": [{"type": "function", "function": {"name": "calc", "arguments": {"expr": "2+2 < 5 & ok"}}}]}
RESULT = {"role": "tool", "content": "4"}

CONVERSATIONS = {
    "user": ([USER], {}),
    "system+user": ([SYSTEM, USER], {}),
    "multi-turn": ([SYSTEM, USER, ANSWERED, USER2], {}),
    "ends-with-assistant": ([USER, ANSWERED, USER2, {"role": "assistant", "content": "<think>\nx\n</think>\n\n6"}],
                            {"add_generation_prompt": False}),
    "reasoning_content": ([USER, REASONED, USER2], {}),
    "tools": ([USER, CALL, RESULT], {"tools": TOOLS}),
    "thinking-off": ([USER], {"enable_thinking": False}),
    "thinking-on": ([SYSTEM, USER], {"enable_thinking": True}),
}


def ours(template: str, messages, **kw) -> str:
    agp = kw.pop("add_generation_prompt", True)
    return ct.render(template, messages, model_id="m", bos_token="<BOS>", eos_token="<EOS>",
                     add_generation_prompt=agp, specials=None, **kw)


def hf(template: str, messages, **kw) -> str:
    """transformers' own rendering, through the function `apply_chat_template` calls."""
    tu = pytest.importorskip("transformers.utils.chat_template_utils")
    agp = kw.pop("add_generation_prompt", True)
    tools = kw.pop("tools", None)
    chat = [{k: v for k, v in m.items() if v is not None} for m in messages]  # apply_chat_template's normalization
    rendered, _ = tu.render_jinja_template([chat], tools=tools, chat_template=template, add_generation_prompt=agp,
                                           bos_token="<BOS>", eos_token="<EOS>", **kw)
    return rendered[0]


def _same_as_transformers(template: str, messages, kw: dict) -> str:
    got = ours(template, messages, **dict(kw))
    assert got == hf(template, messages, **dict(kw))
    return got


# -- the real templates: rendered as transformers renders them (pure, fast) ---------------------
@pytest.mark.parametrize("conversation", CONVERSATIONS)
@pytest.mark.parametrize("name", REAL)
def test_real_template_renders_as_transformers(name, conversation):
    messages, kw = CONVERSATIONS[conversation]
    _same_as_transformers(REAL[name], messages, kw)


def test_qwen3_thinking_switch_and_tools_are_pinned():
    """The parts that matter, written out (not only "equal to transformers")."""
    t = REAL["qwen3"]
    assert ours(t, [USER], enable_thinking=False).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert ours(t, [USER], enable_thinking=True).endswith(USER["content"] + "<|im_end|>\n<|im_start|>assistant\n")
    tools = ours(t, [USER, CALL, RESULT], tools=TOOLS)
    # tojson as Hugging Face's: no HTML escaping, non-ASCII kept (Jinja's own gives \u003c, \u0026, \u00e9)
    assert json.dumps(TOOLS[0], ensure_ascii=False) in tools and "\\u003c" not in tools
    assert '<tool_call>\n{"name": "calc", "arguments": {"expr": "2+2 < 5 & ok"}}\n</tool_call>' in tools
    assert "<|im_start|>user\n<tool_response>\n4\n</tool_response><|im_end|>\n" in tools
    # past reasoning: dropped before the last query, kept (from reasoning_content) after it
    multi = ours(t, [USER, ANSWERED, USER2, REASONED], add_generation_prompt=False)
    assert "add them" not in multi and "<|im_start|>assistant\nIt is 4.<|im_end|>" in multi
    assert multi.endswith("<|im_start|>assistant\n<think>\n3+3=6\n</think>\n\nIt is 6.<|im_end|>\n")


def test_r1_distill_and_qwq_open_the_thinking_block():
    r1 = ours(REAL["deepseek-r1-distill"], [SYSTEM, USER, ANSWERED, USER2])
    assert r1 == ("<BOS>You are terse.<｜User｜>" + USER["content"] + "<｜Assistant｜>\n\nIt is 4.<｜end▁of▁sentence｜>"
                  "<｜User｜>And 3+3?<｜Assistant｜><think>\n")
    qwq = ours(REAL["qwq"], [USER, ANSWERED, USER2])
    assert qwq.endswith("<|im_start|>assistant\nIt is 4.<|im_end|>\n<|im_start|>user\nAnd 3+3?<|im_end|>\n"
                        "<|im_start|>assistant\n<think>\n")


def test_none_valued_keys_are_dropped_as_transformers_does():
    """`content: null` next to tool calls: the key is absent for the template (Qwen2.5-style
    templates then test `if message.content`), and a template that needs it fails the same way."""
    call = {"role": "assistant", "content": None,
            "tool_calls": [{"type": "function", "function": {"name": "calc", "arguments": '{"expr": "2+2"}'}}]}
    qwen_like = ("{% for m in messages %}{{ m.role }}:{% if m.content is defined %}[{{ m.content }}]{% endif %}"
                 "{% for c in m.tool_calls or [] %}{{ c.function.arguments }}{% endfor %};{% endfor %}")
    assert _same_as_transformers(qwen_like, [USER2, call], {}) == 'user:[And 3+3?];assistant:{"expr": "2+2"};'
    with pytest.raises(TemplateRenderError, match="undefined"):
        ours(REAL["deepseek-r1-distill"], [USER, call])
    jinja2 = pytest.importorskip("jinja2")
    with pytest.raises(jinja2.exceptions.UndefinedError):
        hf(REAL["deepseek-r1-distill"], [USER, call])


@pytest.mark.parametrize("field", ["reasoning_content", "thinking", "reasoning"])
def test_reasoning_reaches_the_template_under_both_names(field):
    t = "{% for m in messages %}{{ m.reasoning_content }}|{{ m.thinking }}|{{ m.content }}{% endfor %}"
    msg = {"role": "assistant", "content": "6", field: "3+3"}
    assert _same_as_transformers(t, [msg], {}) == "3+3|3+3|6"


# -- the environment, feature by feature (pure) ------------------------------------------------
@pytest.mark.parametrize("template, expected", [
    # loopcontrols
    ("{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}{{ m.content }}{% endfor %}", "a"),
    ("{% for m in messages %}{% if loop.first %}{% continue %}{% endif %}{{ m.content }}{% endfor %}", "b"),
    # the assistant-mask tag renders its body
    ("{% for m in messages %}{% generation %}<{{ m.content }}>{% endgeneration %}{% endfor %}", "<a><b>"),
    # tojson: no HTML escaping, non-ASCII kept, transformers' options
    ("{{ {'k': '<a & é>'} | tojson }}", '{"k": "<a & é>"}'),
    ("{{ {'b': 1, 'a': [1, 2]} | tojson(indent=2, sort_keys=true) }}", '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}'),
    ("{{ ['é'] | tojson(ensure_ascii=true, separators=(',', ':')) }}", '["\\u00e9"]'),
    # dict and namespace as transformers provides them
    ("{{ dict(a=1) | tojson }}{{ dict.fromkeys(['x'], 0) | tojson }}", '{"a": 1}{"x": 0}'),
    ("{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }}", "2"),
    # trim_blocks / lstrip_blocks
    ("{% for m in messages %}\n    {% if true %}\n{{ m.content }}\n    {% endif %}\n{% endfor %}", "a\nb\n"),
    # tools and documents are always defined (None when not given), as in transformers
    ("{{ tools is none }}/{{ documents is none }}", "True/True"),
])
def test_environment_matches_transformers(template, expected):
    assert _same_as_transformers(template, [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
                                 {}) == expected


def test_strftime_now_and_raise_exception():
    from datetime import datetime

    assert ours("{{ strftime_now('%Y') }}", [USER]) == str(datetime.now().year)
    with pytest.raises(TemplateRenderError, match="only user and assistant"):
        ours("{{ raise_exception('only user and assistant roles') }}", [USER])


@pytest.mark.parametrize("template", [
    "{% set ns = namespace(_x=1) %}",
    "{% set ns = namespace(n=1) %}{% set ns._x = 2 %}",
    "{{ dict.__class__.__name__ }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ messages[0].__class__.__mro__ }}",
])
def test_sandbox_still_holds(template):
    with pytest.raises(TemplateRenderError, match="sandbox|undefined"):
        ours(template, [USER])


def test_template_inputs_are_plain_data():
    """Whatever a caller passes, the template sees JSON-like data (as in transformers): rich
    objects become a `<Type>` placeholder, so the sandbox never meets their methods."""
    np = pytest.importorskip("numpy")

    @dataclasses.dataclass
    class Part:
        type: str
        text: str

    class Name(str):
        def evil(self):
            raise AssertionError("reached")

    msg = {"role": Name("user"), "content": [Part("text", "hi")], "n": np.int64(3), "flag": np.bool_(False),
           "obj": object()}
    t = "{% for m in messages %}{{ m.role }}|{{ m.content[0].text }}|{{ m.n + 1 }}|{{ m.flag }}|{{ m.obj }}{% endfor %}"
    assert ours(t, [msg]) == "user|hi|4|False|<object>"


def test_chatml_builtin_is_what_smollm2_and_qwen25_render_with_a_system_message():
    """The built-in `chatml` is plain ChatML: equal to the real templates only when the
    conversation brings its own system message (they add a default one otherwise)."""
    smol = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
            "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
            "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
            "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
    assert ours(ct.CHATML, [SYSTEM, USER, ANSWERED, USER2]) == ours(smol, [SYSTEM, USER, ANSWERED, USER2])
    assert ours(ct.CHATML, [USER]) != ours(smol, [USER])


# -- templates read from the presets' GGUF files (slow: reads the model files) -----------------
@pytest.mark.slow
@pytest.mark.parametrize("preset", ["smollm2-135m", "qwen2.5-coder-0.5b"])
@pytest.mark.parametrize("conversation", CONVERSATIONS)
def test_preset_gguf_template_renders_as_transformers(preset, conversation):
    template = _gguf_template(preset)
    messages, kw = CONVERSATIONS[conversation]
    _same_as_transformers(template, messages, kw)


_GGUF_TEMPLATES: dict[str, str] = {}


def _gguf_template(preset: str) -> str:
    if preset not in _GGUF_TEMPLATES:
        _GGUF_TEMPLATES[preset] = ct.load_template(preset)
    return _GGUF_TEMPLATES[preset]


@pytest.mark.slow
def test_preset_templates_are_the_published_ones():
    smol, qwen = _gguf_template("smollm2-135m"), _gguf_template("qwen2.5-coder-0.5b")
    assert "You are a helpful AI assistant named SmolLM, trained by Hugging Face" in smol
    assert "You are Qwen, created by Alibaba Cloud. You are a helpful assistant." in qwen
    assert ours(qwen, [USER]).startswith("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud.")
