"""Engines behind one protocol. `load_backend(model_string)` picks the right one.

Heavy engine imports happen inside the engine modules, only when a backend is built.
"""

from __future__ import annotations

from ..errors import ConfigError, LeanthinkError
from ..models import PRESETS, ModelSpec, ensure_preset_file, parse_model_string, redact
from .base import Backend, BaseBackend, Capabilities, Chunk, Completion, SamplingParams

__all__ = [
    "Backend", "BaseBackend", "Capabilities", "Chunk", "Completion", "SamplingParams",
    "load_backend",
]

_INT_OPTIONS = {"n_ctx", "threads", "max_retries"}


def _options(spec: ModelSpec, allowed: set[str]) -> dict:
    unknown = set(spec.options) - allowed
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(sorted(unknown))} in model string '{redact(spec.raw)}'; "
            f"allowed here: {', '.join(sorted(allowed)) or 'none'}"
        )
    out = {}
    for k, v in spec.options.items():
        if k in _INT_OPTIONS:
            try:
                out[k] = int(v)
            except ValueError:
                raise ConfigError(f"option {k} must be an integer, got '{v}'") from None
            if out[k] < (0 if k == "max_retries" else 1):
                raise ConfigError(f"option {k} must be {'>= 0' if k == 'max_retries' else 'positive'}, got {v}")
        else:
            out[k] = v
    return out


def load_backend(model: str | None = None, *, quiet: bool = False) -> BaseBackend:
    """Build a backend from a model string (see `leanthink.models`)."""
    spec = parse_model_string(model)
    if spec.kind in ("preset", "gguf"):
        opts = _options(spec, {"n_ctx", "threads", "template", "family"})
        from .llamacpp import LlamaCppBackend

        if spec.kind == "preset":
            preset = PRESETS[spec.target]
            path, model_id = str(ensure_preset_file(preset, quiet=quiet)), preset.name
        else:
            path, model_id = spec.target, spec.target
        b = LlamaCppBackend(
            path, model_id, n_ctx=opts.get("n_ctx", 8192), n_threads=opts.get("threads"),
            template=opts.get("template"),
        )
    elif spec.kind == "openai":
        opts = _options(spec, {"template", "api_key", "api_key_env", "mode", "family", "max_retries", "tokenizer"})
        from .openai_http import OpenAIBackend

        encoder = None
        if "tokenizer" in opts:  # loaded first: a bad path fails before any network call
            from .local_tokenizer import load_tokenizer

            encoder = load_tokenizer(opts["tokenizer"])
        # The tokenizer files of the served model carry its chat template too: the same prompt
        # as in process, without a separate template= option.
        template = opts.get("template")
        if template is None and "tokenizer" in opts:
            from .chat_template import load_template

            try:
                template = opts["tokenizer"] if load_template(opts["tokenizer"]) else None
            except LeanthinkError:  # no template in those files: /props or chat mode, as before
                template = None
        b = OpenAIBackend(
            spec.target, spec.served_name, template=template, api_key=opts.get("api_key"),
            mode=opts.get("mode", "auto"), max_retries=opts.get("max_retries", 2),
            api_key_env=opts.get("api_key_env"),
        )
        b.local_tokenizer = encoder
    elif spec.kind == "hf":
        opts = _options(spec, {"gguf_file", "device", "dtype", "family", "template", "threads"})
        from .transformers_backend import TransformersBackend

        b = TransformersBackend(
            spec.target, gguf_file=opts.get("gguf_file"), device=opts.get("device"),
            dtype=opts.get("dtype"), template=opts.get("template"), threads=opts.get("threads"),
        )
    elif spec.kind == "vllm":
        opts = _options(spec, {"family", "template", "n_ctx"})
        from .vllm_backend import VLLMBackend

        b = VLLMBackend(spec.target, template=opts.get("template"), max_model_len=opts.get("n_ctx"))
    else:  # pragma: no cover
        raise ConfigError(f"unsupported model kind {spec.kind}")
    b.family_override = spec.options.get("family")
    return b
