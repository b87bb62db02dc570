"""Render a Hugging Face-style Jinja chat template to raw text, locally.

Rendering locally (instead of letting the server do it) is what gives us full control:
we can append a partial assistant turn and continue from it.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache

from ..errors import ConfigError


@lru_cache(maxsize=16)
def _compile(template: str):
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str):
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(template)
    except TemplateError as exc:
        raise ConfigError(f"the model's chat template does not parse: {exc}") from exc


def render(
    template: str | None,
    messages: list[dict[str, str]],
    *,
    model_id: str,
    bos_token: str = "",
    eos_token: str = "",
    add_generation_prompt: bool = True,
    **extra,
) -> str:
    if not template:
        raise ConfigError(
            f"model '{model_id}' has no chat template, so a chat prompt cannot be built. "
            "Pass one with the model string option `template=PATH` (a .jinja file) or use a chat/instruct model."
        )
    for m in messages:
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ConfigError(f"each message needs 'role' and 'content', got {m!r}")
    return _compile(template).render(
        messages=messages,
        bos_token=bos_token,
        eos_token=eos_token,
        add_generation_prompt=add_generation_prompt,
        **extra,
    )


CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
"""The ChatML template (Qwen, QwQ, SmolLM2), usable by name when a server hides its template."""

BUILTIN_TEMPLATES = {"chatml": CHATML}
