"""Base models in, GGUF out: the two ends of training.

In: training needs a Hugging Face model directory, but leanthink's presets are GGUF files
(hub weights cannot be downloaded here). `hf_model_dir` loads a GGUF through transformers,
which dequantises it, and caches the result as an ordinary HF directory in bf16 under the
leanthink cache dir, so the slow first load happens once per file.

Out: `export` merges the LoRA adapter into that base, saves the merged HF model and
converts it to GGUF with llama.cpp's own `convert_hf_to_gguf.py`, so the trained model
runs in every backend (`solve`/`bench`/`serve --model OUT.gguf`). `export_base` sends the
untrained base through the very same path and quantisation, so that a comparison measures
the training, not the file format. The converter is not copied into this repository: it
is vendored in llama-cpp-python's source distribution on PyPI, and `fetch_converter`
(CLI: `leanthink train fetch-converter`) downloads that sdist once with pip and extracts
the converter scripts and their `gguf-py` package into the cache.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from ..errors import ConfigError, LeanthinkError, ModelFileError, require

CONVERTER_VERSION = "0.3.36"
"""llama-cpp-python version whose vendored llama.cpp converter is used (the pinned runtime)."""
OUTTYPES = ("q8_0", "f16", "bf16", "f32")
_MEMBERS = ("convert_hf_to_gguf.py", "convert_lora_to_gguf.py", "conversion/", "gguf-py/")
COMPLETE = "leanthink-complete.json"
"""Marker written last into a cached or exported HF directory: its absence means unfinished."""


class ExportError(LeanthinkError):
    """Conversion or merge failed for a reason the user can act on."""


# -- models in ------------------------------------------------------------------------------

def _cache_dir() -> Path:
    from ..models import cache_dir

    return cache_dir()


def gguf_source(model: str) -> Path | None:
    """The GGUF file behind a model string (preset or .gguf path), or None for HF ids/dirs."""
    from ..models import PRESETS, ensure_preset_file, parse_model_string

    spec = parse_model_string(model)
    if spec.kind == "preset":
        return ensure_preset_file(PRESETS[spec.target], quiet=True)
    if spec.kind == "gguf":
        return Path(spec.target).resolve()
    if spec.kind == "hf":
        return None
    raise ConfigError(f"cannot train '{spec.display}': give a preset, a .gguf file, a local HF directory or a hub id")


def hf_model_dir(model: str, *, log=print) -> str:
    """A directory (or hub id) that `AutoModelForCausalLM.from_pretrained` loads for `model`.

    A GGUF (preset or path) is dequantised once into `<cache>/hf-from-gguf/<name>-<size>/` in bf16."""
    from ..models import parse_model_string

    src = gguf_source(model)
    if src is None:
        return parse_model_string(model).target
    st = src.stat()
    out = _cache_dir() / "hf-from-gguf" / f"{src.stem}-{st.st_size}"
    if (out / COMPLETE).is_file():
        return str(out)
    transformers = require("transformers", "train", "loading a GGUF for training")
    torch = require("torch", "train", "loading a GGUF for training")
    require("gguf", "train", "loading a GGUF for training")
    log(f"dequantising {src.name} into {out} (once; later runs reuse it)")
    t0 = time.time()
    try:
        tok = transformers.AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
        qc = {}
        if hasattr(transformers, "GgufConfig"):  # transformers >= 5 keeps GGUF blocks packed unless told
            qc["quantization_config"] = transformers.GgufConfig(dequantize=True)
        m = transformers.AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name,
                                                              dtype=torch.bfloat16, **qc)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelFileError(f"transformers could not load '{src}': {exc}") from exc
    _drop_quantizer(m)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    m.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / COMPLETE).write_text(json.dumps({"source": str(src), "dtype": "bfloat16", "seconds": round(time.time() - t0, 1)}))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    log(f"dequantised in {time.time() - t0:.0f}s")
    return str(out)


def _drop_quantizer(m) -> None:
    """After a full dequantisation the weights are dense: forget the GGUF quantizer so that
    `save_pretrained` writes an ordinary checkpoint (it refuses GGUF-"quantized" models)."""
    for attr in ("hf_quantizer", "quantization_method"):
        if getattr(m, attr, None) is not None:
            setattr(m, attr, None)
    if getattr(m, "is_quantized", False):
        m.is_quantized = False
    if hasattr(m.config, "quantization_config"):
        del m.config.quantization_config


# -- the converter --------------------------------------------------------------------------

def converter_dir() -> Path:
    """Where the extracted llama.cpp converter lives (LEANTHINK_CONVERTER_DIR overrides)."""
    env = os.environ.get("LEANTHINK_CONVERTER_DIR")
    return Path(env).expanduser() if env else _cache_dir() / "llama.cpp-convert" / CONVERTER_VERSION


def fetch_converter(sdist: str | None = None, *, log=print) -> Path:
    """Extract llama.cpp's converter from llama-cpp-python's sdist (downloaded with pip, or `sdist`)."""
    dest = converter_dir()
    if (dest / "convert_hf_to_gguf.py").is_file() and (dest / COMPLETE).is_file():
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        if sdist is None:
            log(f"downloading llama-cpp-python=={CONVERTER_VERSION} source from PyPI (for its converter only)")
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                   f"llama-cpp-python=={CONVERTER_VERSION}", "-d", tmp]
            r = subprocess.run(cmd, capture_output=True, text=True)
            found = list(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
            if r.returncode != 0 or not found:
                last = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
                raise ExportError(f"pip download of llama-cpp-python failed ({last[0]}); download the sdist elsewhere "
                                  "and run: leanthink train fetch-converter --sdist PATH.tar.gz")
            sdist = str(found[0])
        if not Path(sdist).is_file():
            raise ConfigError(f"sdist '{sdist}' does not exist")
        staging = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        n = 0
        with tarfile.open(sdist) as tf:
            for m in tf.getmembers():
                parts = m.name.split("/vendor/llama.cpp/", 1)
                if len(parts) != 2 or not parts[1].startswith(_MEMBERS) or not (m.isfile() or m.isdir()):
                    continue
                m.name = parts[1]
                tf.extract(m, staging, filter="data")
                n += 1
        if not (staging / "convert_hf_to_gguf.py").is_file():
            raise ExportError(f"'{sdist}' does not contain vendor/llama.cpp/convert_hf_to_gguf.py")
        (staging / COMPLETE).write_text(json.dumps({"sdist": Path(sdist).name, "files": n}))
        shutil.rmtree(dest, ignore_errors=True)
        staging.rename(dest)
    log(f"converter ready in {dest}")
    return dest


def _run_converter(script: str, args: list[str], *, log=print) -> None:
    d = converter_dir()
    if not (d / script).is_file():
        raise ExportError(f"llama.cpp's {script} is not installed; run once (needs PyPI): leanthink train fetch-converter")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(d / "gguf-py"), str(d), os.environ.get("PYTHONPATH", "")])}
    env.setdefault("NO_LOCAL_GGUF", "")
    t0 = time.time()
    r = subprocess.run([sys.executable, str(d / script), *args], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        tail = [ln for ln in (r.stderr or r.stdout).strip().splitlines() if ln.strip()][-1:] or ["no output"]
        raise ExportError(f"{script} failed: {tail[0]}")
    log(f"{script} done in {time.time() - t0:.0f}s")


def convert_to_gguf(hf_dir: str | Path, out: str | Path, outtype: str = "q8_0", *, log=print) -> Path:
    """HF directory -> one GGUF file of `outtype` (llama.cpp's converter, in a subprocess)."""
    if outtype not in OUTTYPES:
        raise ConfigError(f"outtype must be one of {', '.join(OUTTYPES)}, got '{outtype}'")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    _run_converter("convert_hf_to_gguf.py", [str(hf_dir), "--outfile", str(tmp), "--outtype", outtype], log=log)
    tmp.replace(out)
    return out


# -- models out -----------------------------------------------------------------------------

def _adapter_dir(run_dir: Path) -> Path | None:
    for d in (run_dir / "adapter", run_dir):
        if (d / "adapter_config.json").is_file():
            return d
    return None


def merge(run_dir: str | Path, *, log=print) -> Path:
    """Merge the run's LoRA adapter into its base and save `<run>/merged` (bf16). Idempotent."""
    run_dir = Path(run_dir)
    merged = run_dir / "merged"
    if (merged / COMPLETE).is_file():
        return merged
    if not run_dir.is_dir():
        raise ConfigError(f"training run directory '{run_dir}' does not exist")
    transformers = require("transformers", "train", "export")
    torch = require("torch", "train", "export")
    adapter = _adapter_dir(run_dir)
    t0 = time.time()
    if adapter is None:
        full = run_dir / "model"
        if not (full / "config.json").is_file():
            raise ConfigError(f"'{run_dir}' holds neither a LoRA adapter (adapter/) nor a full model (model/)")
        model = transformers.AutoModelForCausalLM.from_pretrained(str(full), dtype=torch.bfloat16)
        tok_dir = full
    else:
        peft = require("peft", "train", "merging a LoRA adapter")
        base = json.loads((adapter / "adapter_config.json").read_text()).get("base_model_name_or_path")
        if not base:
            raise ExportError(f"{adapter / 'adapter_config.json'} names no base model")
        model = transformers.AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16)
        model = peft.PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
        tok_dir = adapter
    tok = transformers.AutoTokenizer.from_pretrained(str(tok_dir))
    tmp = merged.with_name("merged.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / COMPLETE).write_text(json.dumps({"adapter": str(adapter) if adapter else None}))
    shutil.rmtree(merged, ignore_errors=True)
    tmp.rename(merged)
    log(f"merged into {merged} in {time.time() - t0:.0f}s")
    return merged


def export(run_dir: str | Path, out: str | Path | None = None, *, outtype: str = "q8_0", lora_gguf: bool = False,
           log=print) -> dict:
    """Merge + GGUF (+ optionally a GGUF LoRA adapter for llama.cpp's `lora_path`); returns a summary."""
    run_dir = Path(run_dir)
    t0 = time.time()
    merged = merge(run_dir, log=log)
    gguf = convert_to_gguf(merged, out or run_dir / f"model-{outtype}.gguf", outtype, log=log)
    summary = {"run_dir": str(run_dir), "merged": str(merged), "gguf": str(gguf), "outtype": outtype,
               "gguf_bytes": gguf.stat().st_size}
    if lora_gguf:
        adapter = _adapter_dir(run_dir)
        if adapter is None:
            raise ConfigError(f"'{run_dir}' has no LoRA adapter to convert")
        base = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
        lora_out = run_dir / "adapter-f16.gguf"
        _run_converter("convert_lora_to_gguf.py", [str(adapter), "--base", str(base), "--outfile", str(lora_out),
                                                   "--outtype", "f16"], log=log)
        summary["lora_gguf"] = str(lora_out)
        summary["lora_usage"] = f"--model '{base_gguf_hint(base)}?lora_path={lora_out}' (llama.cpp backend)"
    summary["seconds"] = round(time.time() - t0, 1)
    (run_dir / "export.json").write_text(json.dumps(summary, indent=2))
    return summary


def base_gguf_hint(base: str) -> str:
    """The GGUF a dequantised cache dir came from (for the LoRA usage hint), else the base itself."""
    marker = Path(base) / COMPLETE
    if marker.is_file():
        return json.loads(marker.read_text()).get("source", base)
    return base


def export_base(model: str, out: str | Path, *, outtype: str = "q8_0", log=print) -> dict:
    """The untrained base through the same path (HF dir -> converter -> `outtype`) as `export`."""
    t0 = time.time()
    hf = hf_model_dir(model, log=log)
    gguf = convert_to_gguf(hf, out, outtype, log=log)
    return {"model": model, "hf_dir": hf, "gguf": str(gguf), "outtype": outtype, "gguf_bytes": gguf.stat().st_size,
            "seconds": round(time.time() - t0, 1)}
