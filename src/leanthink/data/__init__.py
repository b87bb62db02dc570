"""Benchmark datasets behind one spec string.

Specs:
  gsm8k | math500 | aime24        local files (gsm8k_dev.jsonl, math500_test.jsonl, aime24_test.jsonl)
                                   in --data-dir / $LEANTHINK_DATA_DIR / ../shared/data
  gsm8k_train                      gsm8k_train.jsonl there: training data only (see `eval_source_reason`)
  builtin                          offline default: rg:gsm_symbolic?n=20
  rg:TASK[?n=50&...]               reasoning_gym generator, deterministic by seed
  jsonl:PATH[?question=F&answer=F&kind=number|math|text|gsm8k|auto&id=F]   (or a bare *.jsonl path)
  hf:ORG/NAME[?split=test&config=C&question=F&answer=F&kind=..&id=F]       needs `datasets` + hub access

Every loader returns a `Dataset` of `Item`s whose `answer` is the extracted gold answer.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

from ..errors import ConfigError, DataError
from .records import SPEC_KINDS, FieldMap, collect, iter_jsonl
from .rg import TASKS as RG_TASKS
from .types import KINDS, Dataset, Item

__all__ = ["Item", "Dataset", "KINDS", "load_dataset", "list_datasets", "resolve_data_dir", "eval_source_reason"]

ENV_VAR = "LEANTHINK_DATA_DIR"
BUILTIN = "rg:gsm_symbolic?n=20"


@dataclass(frozen=True)
class _Named:
    file: str
    fields: FieldMap
    description: str
    hf: str  # the same data on the Hugging Face hub, for the error message


NAMED: dict[str, _Named] = {
    "gsm8k": _Named(
        "gsm8k_dev.jsonl",
        FieldMap(prefix="gsm8k", question="question", answer="answer", kind="gsm8k", id="idx", meta_fields=()),
        "GSM8K grade-school word problems (test split, first 1000); integer answers",
        "hf:openai/gsm8k?config=main&split=test&kind=gsm8k",
    ),
    "math500": _Named(
        "math500_test.jsonl",
        FieldMap(prefix="math500", question="problem", answer="answer", kind="math", id="unique_id",
                 meta_fields=("level", "subject", "solution")),
        "MATH-500 competition problems; LaTeX answers, with level and subject",
        "hf:HuggingFaceH4/MATH-500?split=test&question=problem&kind=math&id=unique_id",
    ),
    "aime24": _Named(
        "aime24_test.jsonl",
        FieldMap(prefix="aime24", question="problem", answer="answer", kind="number", id="id",
                 meta_fields=("url", "solution")),
        "AIME 2024 (30 problems); integer answers 0-999",
        "hf:HuggingFaceH4/aime_2024?split=train&question=problem&kind=number",
    ),
    "gsm8k_train": _Named(
        "gsm8k_train.jsonl",
        FieldMap(prefix="gsm8k_train", question="question", answer="answer", kind="gsm8k", id="idx", meta_fields=()),
        "GSM8K train split (7,473 problems with worked solutions); for post-training data, never for evaluation",
        "hf:openai/gsm8k?config=main&split=train&kind=gsm8k",
    ),
}

#: Datasets that measure models: post-training must never collect from them (`is_eval_source`).
EVAL_NAMES = ("gsm8k", "math500", "aime24", "builtin")
EVAL_FILES = tuple(NAMED[n].file for n in ("gsm8k", "math500", "aime24"))

_FILE_PARAMS = ("question", "answer", "kind", "id")
_HF_PARAMS = ("split", "config", *_FILE_PARAMS)


def list_datasets() -> list[tuple[str, str]]:
    """(spec, description) pairs for `leanthink datasets` / --help."""
    out = [(name, f"{n.description} [{n.file} in --data-dir]") for name, n in NAMED.items()]
    out.append(("builtin", f"offline default: 20 generated GSM8K-style problems ({BUILTIN})"))
    out += [(f"rg:{task}", f"{desc} (offline, seeded; ?n=50)") for task, desc in RG_TASKS.items()]
    out.append(("jsonl:PATH", "local JSONL file; ?question=FIELD&answer=FIELD&kind=number|math|text|gsm8k&id=FIELD"))
    out.append(("hf:ORG/NAME", "Hugging Face hub dataset (needs `datasets` and network); ?split=test&config=..&question=..&answer=..&kind=.."))
    return out


def _known() -> str:
    return ", ".join(name for name, _ in list_datasets())


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> tuple[Path | None, str]:
    """(directory or None, where it came from): argument, then $LEANTHINK_DATA_DIR, then ../shared/data."""
    if data_dir:
        return Path(data_dir).expanduser(), "--data-dir"
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser(), ENV_VAR
    default = (Path.cwd() / ".." / "shared" / "data").resolve()
    if default.is_dir():
        return default, "../shared/data"
    return None, f"../shared/data (= {default}, not found)"


def _parse(spec: str) -> tuple[str, dict[str, str]]:
    base, _, query = spec.strip().partition("?")
    params: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key in params:
            raise ConfigError(f"dataset spec {spec!r}: option {key!r} given twice")
        params[key] = value
    return base.strip(), params


def _check_params(spec: str, params: dict[str, str], allowed: tuple[str, ...]) -> None:
    bad = [k for k in params if k not in allowed]
    if bad:
        allowed_txt = ", ".join(allowed) if allowed else "none"
        raise ConfigError(f"dataset spec {spec!r}: unknown option(s) {', '.join(bad)} (allowed: {allowed_txt})")


def _field_map(prefix: str, params: dict[str, str]) -> FieldMap:
    kind = params.get("kind", "auto").strip().lower() or "auto"
    if kind not in SPEC_KINDS:
        raise ConfigError(f"unknown kind {kind!r}; use one of: {', '.join(SPEC_KINDS)}")
    return FieldMap(
        prefix=prefix,
        question=params.get("question") or None,
        answer=params.get("answer") or None,
        kind=kind,
        id=params.get("id") or None,
    )


def _load_named(name: str, data_dir, *, limit, skip_bad) -> Dataset:
    named = NAMED[name]
    directory, how = resolve_data_dir(data_dir)
    hint = (
        f"Point at the directory holding {named.file} with --data-dir DIR or the {ENV_VAR} environment "
        f"variable. With Hugging Face hub access, '{named.hf}' loads the same data; "
        f"offline without data files, 'builtin' generates problems."
    )
    if directory is None:
        raise DataError(f"{name}: no data directory found: tried {how}. {hint}")
    path = directory / named.file
    if not path.is_file():
        raise DataError(f"{name}: data file not found: {path} (data directory from {how}). {hint}")
    items, skipped = collect(iter_jsonl(path), named.fields, where=str(path), limit=limit, skip_bad=skip_bad)
    return Dataset(name=name, source=str(path), items=items, skipped=skipped)


def _load_jsonl(spec: str, path_text: str, params, data_dir, *, limit, skip_bad) -> Dataset:
    _check_params(spec, params, _FILE_PARAMS)
    if not path_text:
        raise ConfigError(f"dataset spec {spec!r}: no file path after 'jsonl:'")
    _field_map("", params)  # validate options before touching the file system
    path = Path(path_text).expanduser()
    if not path.is_absolute() and not path.exists():
        directory, _ = resolve_data_dir(data_dir)
        if directory is not None and (directory / path).exists():
            path = directory / path
    if not path.is_file():
        raise DataError(f"data file not found: {path} (relative paths are tried from the current directory, then --data-dir / {ENV_VAR})")
    name = path.name[: -len(".jsonl")] if path.name.endswith(".jsonl") else path.stem
    fm = _field_map(name, params)
    items, skipped = collect(iter_jsonl(path), fm, where=str(path), limit=limit, skip_bad=skip_bad)
    return Dataset(name=name, source=str(path), items=items, skipped=skipped)


def load_dataset(
    spec: str,
    *,
    limit: int | None = None,
    data_dir: str | None = None,
    skip_bad: bool = False,
    seed: int = 0,
) -> Dataset:
    """Load a dataset by spec (see the module docstring). `limit` keeps the first N good items."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0):
        raise ConfigError(f"limit must be a positive integer, got {limit!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"empty dataset spec; known datasets: {_known()}")

    base, params = _parse(spec)
    low = base.lower()

    if low == "builtin":
        _check_params(spec, params, ("n", "seed"))
        _, defaults = _parse(BUILTIN)
        ds = _load_rg("gsm_symbolic", {**defaults, **params}, limit=limit, seed=seed, skip_bad=skip_bad)
        ds.name = "builtin"
    elif low in NAMED:
        _check_params(spec, params, ())
        ds = _load_named(low, data_dir, limit=limit, skip_bad=skip_bad)
    elif low.startswith("rg:"):
        task = base[3:].strip()
        if not task:
            raise ConfigError(f"dataset spec {spec!r}: no task after 'rg:'; tested tasks: {', '.join(RG_TASKS)}")
        ds = _load_rg(task, params, limit=limit, seed=seed, skip_bad=skip_bad)
    elif low.startswith("hf:"):
        from .hf import load_hf

        name = base[3:].strip()
        if not name:
            raise ConfigError(f"dataset spec {spec!r}: no dataset after 'hf:' (e.g. hf:openai/gsm8k?config=main)")
        _check_params(spec, params, _HF_PARAMS)
        fm = _field_map(name.split("/")[-1], params)
        items, skipped, source = load_hf(name, params, fm, limit=limit, skip_bad=skip_bad)
        ds = Dataset(name=f"hf:{name}", source=source, items=items, skipped=skipped)
    elif low.startswith("jsonl:"):
        ds = _load_jsonl(spec, base[6:].strip(), params, data_dir, limit=limit, skip_bad=skip_bad)
    elif low.endswith(".jsonl"):
        ds = _load_jsonl(spec, base, params, data_dir, limit=limit, skip_bad=skip_bad)
    else:
        close = difflib.get_close_matches(low, [*NAMED, "builtin", *(f"rg:{t}" for t in RG_TASKS)], n=1)
        did = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown dataset {base!r}.{did} Known: {_known()}")

    if not ds.items:
        extra = f" ({len(ds.skipped)} malformed line(s) skipped)" if ds.skipped else ""
        raise DataError(f"{ds.source}: no items{extra}")
    return ds


def _load_rg(task: str, params: dict[str, str], *, limit, seed, skip_bad) -> Dataset:
    from .rg import load_rg

    items, skipped, source = load_rg(task, params, limit=limit, seed=seed, skip_bad=skip_bad)
    return Dataset(name=f"rg:{task}", source=source, items=items, skipped=skipped)



def eval_source_reason(spec: str) -> str | None:
    """Why `spec` names evaluation data (None if it does not): training on the items a model
    is measured on makes every later benchmark meaningless, so post-training refuses these.

    Catches the named eval sets, `builtin`, a `jsonl:` path or bare path to one of the eval
    files (by file name, wherever it lives) and hub specs of GSM8K's / MATH's test splits."""
    if not isinstance(spec, str):
        return None
    base, params = _parse(spec)
    low = base.lower()
    if low in EVAL_NAMES:
        return f"'{base}' is an evaluation dataset"
    path_text = base[6:].strip() if low.startswith("jsonl:") else base if low.endswith(".jsonl") else None
    if path_text is not None and Path(path_text).name.lower() in EVAL_FILES:
        return f"'{Path(path_text).name}' is an evaluation file"
    if low.startswith("hf:"):
        name = low[3:].strip()
        split = params.get("split", "test").lower()
        if split == "test" or "math-500" in name or "aime" in name:
            return f"'{base}' (split={split}) is evaluation data"
    return None
