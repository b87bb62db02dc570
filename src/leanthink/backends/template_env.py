"""The Jinja environment chat templates are written for: Hugging Face's, rebuilt here.

Why: a prompt that differs from the one the model was trained on, by one space or one
escaped `<`, silently costs accuracy, and templates are written (and tested by their
authors) against `transformers`' `apply_chat_template`. So this environment reproduces
what transformers sets up (`transformers.utils.chat_template_utils`, read for transformers
5.x), feature by feature:

* `trim_blocks` and `lstrip_blocks` (a block tag's own line break and indentation vanish);
* the `loopcontrols` extension (`{% break %}`, `{% continue %}`);
* the `{% generation %}...{% endgeneration %}` tag (assistant-mask markup, e.g. SmolLM3);
  we need no mask, so it renders its body and nothing else;
* a `tojson` filter that is `json.dumps` with `ensure_ascii=False` and no HTML escaping
  (Jinja's own escapes `<>&'` as `\\u003c`..., which changes tool schemas in the prompt),
  taking `indent`, `separators`, `sort_keys` and `ensure_ascii` like transformers';
* globals `raise_exception(msg)` (a `TemplateError`), `strftime_now(fmt)` (local time),
  `namespace` refusing `_`-prefixed names, and a `dict` that only builds dicts.

Templates are untrusted code (they come with downloaded models): the environment stays an
`ImmutableSandboxedEnvironment`, as in transformers, so a template cannot reach Python
internals or mutate the values it is given.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache


def tojson(value, ensure_ascii: bool = False, indent=None, separators=None, sort_keys: bool = False) -> str:
    """Hugging Face's `tojson`: plain `json.dumps`, no HTML escaping, non-ASCII kept."""
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def raise_exception(message):
    from jinja2.exceptions import TemplateError

    raise TemplateError(message)


class _DictBuilder:
    """`dict(...)` and `dict.fromkeys(...)` in a template, and nothing else of the `dict` type."""

    def __call__(self, *args, **kwargs):
        return dict(*args, **kwargs)

    def fromkeys(self, *args, **kwargs):
        return dict.fromkeys(*args, **kwargs)


def _namespace_class():
    from jinja2.exceptions import SecurityError
    from jinja2.utils import Namespace

    class SafeNamespace(Namespace):
        """`namespace(...)` whose attributes cannot be `_`-prefixed (no path to dunders)."""

        def __init__(*args, **kwargs):  # Jinja's signature trick: `namespace(self=...)` works
            self, args = args[0], args[1:]
            attrs = dict(*args, **kwargs)
            for name in attrs:
                SafeNamespace.check_name(name)
            Namespace.__init__(self, attrs)

        def __setitem__(self, name, value):
            SafeNamespace.check_name(name)
            Namespace.__setitem__(self, name, value)

        @staticmethod
        def check_name(name):
            if isinstance(name, str) and name.startswith("_"):
                raise SecurityError(f"a chat template cannot store the attribute {name!r} on a namespace")

    return SafeNamespace


def _generation_extension():
    from jinja2 import nodes
    from jinja2.ext import Extension

    class GenerationTag(Extension):
        """`{% generation %}body{% endgeneration %}` renders `body`."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller):
            return caller()

    return GenerationTag


@lru_cache(maxsize=1)
def environment():
    """The shared sandboxed environment (it holds no per-template state)."""
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_generation_extension(), loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals.update(raise_exception=raise_exception, strftime_now=strftime_now,
                       dict=_DictBuilder(), namespace=_namespace_class())
    return env
