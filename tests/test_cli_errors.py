"""Bad output paths and broken chat templates are one-line errors (exit 2), and a bench or a
report never overwrites files it did not write (issue 12, defects 13 and 14).

Fast tests run the real entry point `leanthink.cli.main` in process (the bench refusals
happen before any dataset or model is loaded); the ones that load a model or start a
`leanthink` subprocess are marked slow.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from leanthink.errors import ConfigError
from leanthink.eval.runner import BenchConfig, run_bench
from leanthink.eval.store import DB_NAME, Store, check_out_dir

USER_FILES = {"report.md": b"# my own notes\n", "summary.json": b'{"mine": true}\n', "data.csv": b"a,b\n1,2\n"}
LEANTHINK = Path(sys.executable).with_name("leanthink")


def cli(capsys, monkeypatch, *args: str) -> tuple[int, str]:
    """Run `leanthink ARGS` in process through `main()` (as the console script does): (exit code, stderr)."""
    from leanthink import cli as cli_module

    monkeypatch.setattr(sys, "argv", ["leanthink", *args])
    code = 0
    try:
        cli_module.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    return code, capsys.readouterr().err


def assert_one_error(code: int, stderr: str, *words: str) -> None:
    assert code == 2, stderr
    assert "Traceback" not in stderr
    # (a blank line may come first: the bench progress display ends before the message)
    assert stderr.lstrip("\n").startswith("error: ") and stderr.count("error:") == 1, stderr
    flat = " ".join(stderr.split())  # the console may wrap a long line at its width
    for w in words:
        assert w in flat, stderr


def user_dir(tmp_path: Path) -> Path:
    d = tmp_path / "mine"
    d.mkdir()
    for name, data in USER_FILES.items():
        (d / name).write_bytes(data)
    return d


def assert_untouched(d: Path) -> None:
    assert sorted(p.name for p in d.iterdir()) == sorted(USER_FILES)
    for name, data in USER_FILES.items():
        assert (d / name).read_bytes() == data


BENCH = ("bench", "--model", "smollm2-135m", "--dataset", "builtin", "--limit", "1", "--methods", "direct")


# -- bench --out -----------------------------------------------------------------------------
def test_bench_out_is_an_existing_file(tmp_path, capsys, monkeypatch):
    f = tmp_path / "results.txt"
    f.write_bytes(b"precious\n")
    code, err = cli(capsys, monkeypatch, *BENCH, "--out", str(f))
    assert_one_error(code, err, "is a file, not a directory")
    assert f.read_bytes() == b"precious\n"


def test_bench_refuses_a_non_empty_directory_without_a_store(tmp_path, capsys, monkeypatch):
    d = user_dir(tmp_path)
    code, err = cli(capsys, monkeypatch, *BENCH, "--out", str(d))
    assert_one_error(code, err, "not empty", "--force")
    assert_untouched(d)


@pytest.mark.parametrize("out, words", [
    ("/proc/self/leanthink-bench", "cannot create the results store"),
    ("/proc/self", "not empty"),
])
def test_bench_out_under_proc(out, words, capsys, monkeypatch):
    code, err = cli(capsys, monkeypatch, *BENCH, "--out", out)
    assert_one_error(code, err, words)


def test_bench_out_on_a_read_only_filesystem(tmp_path, capsys, monkeypatch):
    def read_only(self, *a, **kw):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)
    code, err = cli(capsys, monkeypatch, *BENCH, "--out", str(tmp_path / "new"))
    assert_one_error(code, err, "Read-only file system")
    assert not (tmp_path / "new").exists()


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores directory permissions")
def test_bench_out_in_a_read_only_directory(tmp_path, capsys, monkeypatch):
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o500)
    try:
        code, err = cli(capsys, monkeypatch, *BENCH, "--out", str(d / "run"))
    finally:
        d.chmod(0o700)
    assert_one_error(code, err, "cannot create the results store")


def test_store_that_is_not_a_database(tmp_path):
    (tmp_path / DB_NAME).write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(ConfigError, match="cannot open the results store"):
        Store(tmp_path)


def test_out_dir_rules(tmp_path):
    check_out_dir(tmp_path / "new")  # created later by the store
    check_out_dir(tmp_path)  # empty
    d = user_dir(tmp_path)
    with pytest.raises(ConfigError, match="not empty"):
        check_out_dir(d)
    check_out_dir(d, force=True)
    resumable = tmp_path / "run"
    Store(resumable).close()
    (resumable / "report.md").write_text("# leanthink benchmark report\n")
    check_out_dir(resumable)  # a bench directory is resumed, not refused


def test_force_writes_the_store_next_to_the_users_files(tmp_path, monkeypatch):
    d = user_dir(tmp_path)
    cfg = BenchConfig(model="m", dataset="builtin", methods=["direct"], out=str(d), limit=1)
    with pytest.raises(ConfigError, match="not empty"):
        run_bench(cfg, backend=object())
    assert_untouched(d)
    # with force the check passes; stop right after it (no model needed for this test)
    import leanthink.eval.runner as runner

    def stop(*a, **kw):
        raise RuntimeError("past the check")

    monkeypatch.setattr(runner, "Store", stop)
    cfg.force = True
    with pytest.raises(RuntimeError, match="past the check"):
        run_bench(cfg, backend=object())


# -- report ----------------------------------------------------------------------------------------
@pytest.fixture
def bench_dir(tmp_path):
    from tests.test_report import fill, rec

    return fill(tmp_path / "run", [rec("think", "q1", correct=True, thinking=30), rec("direct", "q1", correct=False, thinking=0)])


def test_report_does_not_overwrite_a_file_it_did_not_write(bench_dir, capsys, monkeypatch):
    (bench_dir / "report.md").write_bytes(b"my notes\n")
    code, err = cli(capsys, monkeypatch, "report", str(bench_dir))
    assert_one_error(code, err, "report.md", "not written by leanthink")
    assert (bench_dir / "report.md").read_bytes() == b"my notes\n"
    assert not (bench_dir / "summary.json").exists()  # refused before writing anything


def test_report_html_path_that_is_someone_elses_file(bench_dir, tmp_path, capsys, monkeypatch):
    page = tmp_path / "index.html"
    page.write_bytes(b"<html>my page</html>")
    code, err = cli(capsys, monkeypatch, "report", str(bench_dir), "--html", str(page))
    assert_one_error(code, err, "index.html")
    assert page.read_bytes() == b"<html>my page</html>"


def test_report_rebuilds_its_own_files(bench_dir, capsys, monkeypatch):
    for _ in range(2):  # the second run overwrites what the first wrote
        code, err = cli(capsys, monkeypatch, "report", str(bench_dir))
        assert code == 0, err
    names = {p.name for p in bench_dir.iterdir()}
    assert {"report.md", "summary.json", "report.html", "pareto.png"} <= names


def test_report_force_overwrites(bench_dir):
    from leanthink.eval.report import build_report

    (bench_dir / "summary.json").write_text('{"mine": 1}')
    with pytest.raises(ConfigError, match="summary.json"):
        build_report(bench_dir)
    build_report(bench_dir, force=True)
    assert "methods" in (bench_dir / "summary.json").read_text()


def test_report_to_an_unwritable_path(bench_dir, capsys, monkeypatch):
    code, err = cli(capsys, monkeypatch, "report", str(bench_dir), "--html", "/proc/self/leanthink.html")
    assert_one_error(code, err, "cannot write the report")


# -- chat templates given by the user ----------------------------------------------------------------
TEMPLATES = {
    "raise": ("{{ raise_exception('no system messages please') }}", "no system messages please"),
    "undefined": ("{{ messages[0].content.nope.deeper }}", "undefined"),
    "sandbox": ("{{ messages.__class__.__mro__ }}", "sandbox"),
}


def run_leanthink(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(LEANTHINK), *args], capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(TEMPLATES))
def test_solve_with_a_broken_template(kind, tmp_path, tiny):
    body, words = TEMPLATES[kind]
    tmpl = tmp_path / f"{kind}.jinja"
    tmpl.write_text(body)
    p = run_leanthink("solve", "What is 2+2?", "--model", f"smollm2-135m?template={tmpl}", "--budget", "5")
    assert_one_error(p.returncode, p.stderr, words)
    assert tmpl.read_text() == body


@pytest.mark.slow
def test_bench_refusal_through_the_console_script(tmp_path):
    d = user_dir(tmp_path)
    p = run_leanthink(*BENCH, "--out", str(d))
    assert_one_error(p.returncode, p.stderr, "not empty")
    assert_untouched(d)

