"""`leanthink bench`: every method on every item, resumable, with live progress."""

from __future__ import annotations

import platform
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError, LeanthinkError
from ..grading import Grade, grade_outcome
from ..methods import Method, Task, get_method
from ..models import redact
from .store import Store, check_out_dir


@dataclass
class BenchConfig:
    model: str
    dataset: str
    methods: list[str]
    out: str
    limit: int | None = None
    seed: int = 0
    temperature: float = 0.0
    concurrency: int = 1
    oracle: bool = True
    oracle_max_probes: int = 40
    data_dir: str | None = None
    skip_bad: bool = False
    command: str = ""
    shard: str | None = None
    """`I/N`: run only items whose position modulo N is I, so N processes can share one --out."""
    generation_cache: bool = False
    """Replay streams already generated with the same prompt and seed (`<out>/generations.sqlite`);
    see `backends/cache.py`. Makes paired sampling comparisons affordable; wall time is then
    the recorded engine time of what was replayed plus what ran."""
    force: bool = False
    """Write into a non-empty `out` that holds no results store (refused otherwise: the
    report would overwrite files there, such as the user's own report.md)."""


def versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("leanthink", "llama-cpp-python", "math-verify", "transformers", "torch"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def _error_record(method: Method, item, t0: float) -> dict[str, Any]:
    """The record of an item the method could not run (e.g. a prompt longer than the context)."""
    return {"question": item.question, "method": method.spec, "answer": None, "reasoning": "", "answer_text": "",
            "finish_reason": "error", "usage": {"prompt": 0, "thinking": 0, "answer": 0, "forced": 0, "overhead": 0, "total": 0},
            "latency_s": time.perf_counter() - t0, "trace": [], "samples": 0, "prompt": ""}


def _add_replayed_time(data: dict[str, Any], replayed: float) -> None:
    """Latency includes the recorded engine time of streams the generation cache replayed."""
    data["latency_s"] = data["latency_s"] + replayed
    data["trace"] = list(data.get("trace") or []) + [{
        "event": "generation_cache", "at_token": None,
        "detail": {"replayed_engine_s": round(replayed, 3),
                   "note": "latency includes the recorded engine time of replayed streams"}}]


def run_one(method: Method, item, backend, seed: int, temperature: float) -> dict[str, Any]:
    """Run one method on one item and grade it: the record the store keeps.

    `error` is a run that failed (counted wrong); `grade_error` is a grader that failed on
    the answer (`correct` is False, but the answer was not judged: the report counts these
    apart, so a grader bug cannot pass for lower accuracy)."""
    task = Task.create(item.question, backend, seed=seed, temperature=temperature)
    replayed0 = backend.replayed_s
    t0 = time.perf_counter()
    try:
        data = method(task).model_dump()
        error = None
    except LeanthinkError as exc:  # e.g. a prompt longer than the context: recorded, counted wrong
        data = _error_record(method, item, t0)
        error = redact(str(exc))
    if backend.replayed_s - replayed0 > 0:
        _add_replayed_time(data, backend.replayed_s - replayed0)
    verdict = grade_outcome(data.get("answer"), item.answer, item.kind) if error is None else Grade(False)
    data.update(method=method.spec, item_id=item.id, seed=seed, gold=item.answer, kind=item.kind,
                correct=bool(verdict.correct), error=error)
    if verdict.error:  # only then: records of answers the grader judged are as before
        data["grade_error"] = verdict.error
    return data


def default_out(dataset: str, model: str, seed: int = 0, temperature: float = 0.0) -> str:
    """`runs/DATASET-MODEL` (plus `-sSEED`, `-tTEMP` when not the defaults): a results store
    holds one (model, dataset, seed, temperature), so two benches that differ in one of them
    never share a default directory, and the same one resumes or adds methods."""
    import re

    from ..models import PRESETS, parse_model_string

    def slug(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9._+-]+", "_", text).strip("._-") or "x"

    try:
        spec = parse_model_string(model)
        if spec.kind == "preset":
            m = PRESETS[spec.target].name
        elif spec.kind == "gguf":
            m = spec.target.replace("\\", "/").rsplit("/", 1)[-1].removesuffix(".gguf")
        elif spec.kind == "openai":
            m = spec.served_name or spec.target.split("//", 1)[-1]
        else:
            m = spec.target
    except LeanthinkError:
        m = model
    base = dataset.split("?", 1)[0]
    kind, _, rest = base.partition(":")
    ds = f"{kind}-{rest.replace(chr(92), '/').rsplit('/', 1)[-1].rsplit('.', 1)[0]}" if rest else kind
    name = f"{slug(ds)}-{slug(m)}" + (f"-s{seed}" if seed else "") + (f"-t{temperature:g}" if temperature else "")
    return f"runs/{name}"


def run_bench(cfg: BenchConfig, *, on_progress: Callable[[dict], None] | None = None, backend=None) -> Store:
    """Run every method of `cfg` on every item not stored yet; then the oracle analysis."""
    methods = _check_config(cfg)
    ds = _load_items(cfg)
    store = Store(cfg.out)
    # The store keeps the model string without secrets (api_key=..., user:pass@): it is
    # shared and reported. Identity compares the redacted form, so a rotated key resumes.
    store.check_identity({"model": redact(cfg.model), "dataset": cfg.dataset, "seed": cfg.seed, "temperature": cfg.temperature})
    be = _open_backend(cfg, backend)
    for m in methods:
        m.check(be)
    _write_meta(store, cfg, [m.spec for m in methods], ds, be)
    items = _shard_items(ds.items, cfg.shard)
    done = store.done_keys()
    todo = [(m, it) for it in items for m in methods if (m.spec, it.id, cfg.seed) not in done]
    progress = _Progress(store, cfg, items, [m.spec for m in methods], len(todo), len(ds.skipped), on_progress)
    progress.start()
    _run_all(todo, be, cfg, progress.record)
    if cfg.oracle and "think" in progress.specs:
        run_oracle(store, be, cfg, on_progress=on_progress)
    return store


def _check_config(cfg: BenchConfig) -> list[Method]:
    """The methods to run; every option a user can get wrong is checked before anything loads."""
    if cfg.concurrency < 1:
        raise ConfigError(f"--concurrency must be >= 1, got {cfg.concurrency}")
    check_out_dir(cfg.out, force=cfg.force)  # before the dataset or the model is loaded
    methods = [get_method(m) for m in cfg.methods]
    if not methods:
        raise ConfigError("no methods given; e.g. --methods think,direct")
    specs = [m.spec for m in methods]
    if len(set(specs)) != len(specs):
        raise ConfigError(f"the same method is listed twice: {', '.join(specs)}")
    return methods


def _load_items(cfg: BenchConfig):
    from ..data import load_dataset

    return load_dataset(cfg.dataset, limit=cfg.limit, data_dir=cfg.data_dir, skip_bad=cfg.skip_bad, seed=cfg.seed)


def _open_backend(cfg: BenchConfig, backend=None):
    """The caller's backend or the model's, behind the generation cache when asked for."""
    from ..api import get_backend

    be = backend or get_backend(cfg.model)
    if not cfg.generation_cache:
        return be
    from ..backends.cache import CachedBackend, GenerationCache

    if cfg.concurrency > 1:
        raise ConfigError("--generation-cache needs --concurrency 1 (replayed time is attributed per item)")
    return CachedBackend(be, GenerationCache(Path(cfg.out) / "generations.sqlite"))


def _write_meta(store: Store, cfg: BenchConfig, specs: list[str], ds, be) -> None:
    """What a report needs to say how the numbers were made (secrets redacted)."""
    store.set_meta("config", {**cfg.__dict__, "model": redact(cfg.model), "command": redact(cfg.command),
                              "methods": sorted(set(specs) | set(store.get_meta("config", {}).get("methods", [])))})
    store.set_meta("versions", versions())
    store.set_meta("dataset", {"name": ds.name, "source": ds.source, "n_items": len(ds.items), "skipped": ds.skipped})
    store.set_meta("backend", {"name": be.name, "model_id": be.model_id})
    history = store.get_meta("commands", [])
    command = redact(cfg.command)
    if command and (not history or history[-1] != command):
        store.set_meta("commands", history + [command])


def _shard_items(items: list, shard: str | None) -> list:
    if not shard:
        return items
    idx, n = _parse_shard(shard)
    return [it for pos, it in enumerate(items) if pos % n == idx]


class _Progress:
    """Stores each finished record and reports progress.

    Accuracy per method covers every (method, item) pair of this run's scope that is
    stored, earlier runs included: after a resume, "this run" alone is a skewed sample (the
    methods still to do are often the slow or weak ones), so progress shows these true numbers."""

    def __init__(self, store: Store, cfg: BenchConfig, items: list, specs: list[str], n_todo: int,
                 skipped_lines: int, on_progress: Callable[[dict], None] | None):
        self.store, self.specs, self.on_progress = store, specs, on_progress
        in_scope = {it.id for it in items}
        self.by_method: dict[str, list[int]] = {spec: [0, 0] for spec in specs}
        for r in store.records():
            if r["method"] in self.by_method and r["item_id"] in in_scope and r["seed"] == cfg.seed:
                self.by_method[r["method"]][0] += int(bool(r["correct"]))
                self.by_method[r["method"]][1] += 1
        total = len(items) * len(specs)
        self.state = {"total": total, "done": total - n_todo, "new": 0, "correct": 0, "tokens": 0,
                      "skipped_lines": skipped_lines, "by_method": self.by_method}

    def _report(self, last: dict | None) -> None:
        if self.on_progress:
            self.on_progress(dict(self.state, last=last, by_method={k: list(v) for k, v in self.by_method.items()}))

    def start(self) -> None:
        self._report(None)

    def record(self, data: dict) -> None:
        st = self.state
        if self.store.put(data["method"], data["item_id"], data["seed"], data["correct"], data):
            st["done"] += 1
            st["new"] += 1
            st["correct"] += int(data["correct"])
            st["tokens"] += data["usage"]["total"]
            tally = self.by_method.setdefault(data["method"], [0, 0])
            tally[0] += int(bool(data["correct"]))
            tally[1] += 1
        self._report(data)


def _run_all(todo: list, be, cfg: BenchConfig, record: Callable[[dict], None]) -> None:
    """Run the (method, item) pairs, `cfg.concurrency` at a time, recording each as it ends
    (at most twice the concurrency submitted ahead, so an interrupt loses little)."""
    if cfg.concurrency == 1:
        for m, it in todo:
            record(run_one(m, it, be, cfg.seed, cfg.temperature))
        return
    with ThreadPoolExecutor(cfg.concurrency) as ex:
        pending: set = set()
        queue = iter(todo)

        def fill() -> None:
            for m, it in queue:
                pending.add(ex.submit(run_one, m, it, be, cfg.seed, cfg.temperature))
                if len(pending) >= cfg.concurrency * 2:
                    break

        fill()
        while pending:
            finished, rest = wait(pending, return_when=FIRST_COMPLETED)
            pending.clear()
            pending.update(rest)
            for f in finished:
                record(f.result())
            fill()


def _parse_shard(spec: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in spec.split("/"))
    except ValueError:
        raise ConfigError(f"--shard must look like I/N (e.g. 0/2), got '{spec}'") from None
    if n < 1 or not 0 <= i < n:
        raise ConfigError(f"--shard {spec}: need 0 <= I < N")
    return i, n


def run_oracle(store: Store, backend, cfg: BenchConfig, on_progress=None) -> None:
    from .oracle import find_pearl

    done = store.oracle_done()
    todo = [r for r in store.records("think") if (r["item_id"], r["seed"]) not in done and not r.get("error")]
    if cfg.shard:
        idx, n = _parse_shard(cfg.shard)
        todo = [r for r in todo if hash_shard(r["item_id"], n) == idx]
    for i, r in enumerate(todo):
        task = Task.create(r["question"], backend, seed=r["seed"], temperature=0.0)
        store.put_oracle(r["item_id"], r["seed"], find_pearl(r, task, max_probes=cfg.oracle_max_probes))
        if on_progress:
            on_progress({"oracle_done": i + 1, "oracle_total": len(todo)})


def command_line() -> str:
    import shlex

    args = sys.argv[1:]
    return redact("leanthink " + " ".join(shlex.quote(a) for a in args))


def hash_shard(item_id: str, n: int) -> int:
    """Stable shard of an item for the oracle phase (records do not keep the dataset position)."""
    import zlib

    return zlib.crc32(item_id.encode()) % n
