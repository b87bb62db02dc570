"""Crash-safe results store: one SQLite file in WAL mode per benchmark directory.

Every finished (method, item, seed) is committed on its own, with synchronous=FULL, so
a kill loses at most the items in flight; the primary key makes a rerun skip what is
done and makes double counting impossible.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterable

from ..errors import ConfigError
from ..models import redact_obj

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    method TEXT NOT NULL, item_id TEXT NOT NULL, seed INTEGER NOT NULL,
    correct INTEGER NOT NULL, data TEXT NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (method, item_id, seed)
);
CREATE TABLE IF NOT EXISTS oracle (
    item_id TEXT NOT NULL, seed INTEGER NOT NULL, data TEXT NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (item_id, seed)
);
"""

DB_NAME = "results.sqlite"


def check_out_dir(directory: str | Path, *, force: bool = False) -> None:
    """Refuse a bench output directory that would lose the user's files, before any work.

    A directory with a results store is resumed; a new or empty one is created. A non-empty
    directory without a store is someone else's: the report would overwrite its
    `report.md`/`summary.json`, so it needs `force`. A path that is a file, or that cannot be
    read, is an error with its reason (not a traceback)."""
    p = Path(directory)
    try:
        if p.exists() and not p.is_dir():
            raise ConfigError(f"--out '{directory}' is a file, not a directory; give a new or empty directory")
        if not p.is_dir() or (p / DB_NAME).exists() or (p / "generations.sqlite").exists():
            return  # ours: a results store, or a generation cache whose results were removed
        non_empty = any(p.iterdir())
    except OSError as exc:
        raise ConfigError(f"cannot use --out '{directory}': {exc.strerror or exc}") from None
    if non_empty and not force:
        raise ConfigError(
            f"--out '{directory}' is not empty and holds no leanthink results ({DB_NAME}); its files "
            "(e.g. report.md, summary.json) could be overwritten. Give a new or empty directory, "
            "or pass --force to write into it anyway"
        )


class Store:
    def __init__(self, directory: str | Path, *, create: bool = True):
        self.dir = Path(directory)
        path = self.dir / DB_NAME
        if not create and not path.exists():
            raise ConfigError(f"no benchmark results in '{directory}' (expected {path}); run `leanthink bench --out {directory}` first")
        self.path = path
        self._lock = threading.Lock()
        try:  # a file in the way, a read-only filesystem, /proc: the user's to fix, with the reason
            self.dir.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self.db.execute("PRAGMA busy_timeout=30000")  # several `--shard` processes may share one store
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(SCHEMA)
        except OSError as exc:
            raise ConfigError(f"cannot create the results store in '{directory}': {exc.strerror or exc}") from None
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open the results store {path}: {exc}") from None

    # -- meta ------------------------------------------------------------------
    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def set_meta(self, key: str, value: Any) -> None:
        """Meta (config, command lines, identity) is shown in reports: secrets are masked."""
        with self._lock:
            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(redact_obj(value))))

    def check_identity(self, identity: dict[str, Any]) -> None:
        """Refuse to mix results of a different model/dataset into one directory. Both sides
        are compared redacted (a store written before redaction may hold the raw string)."""
        identity, old = redact_obj(identity), redact_obj(self.get_meta("identity"))
        if old is None:
            self.set_meta("identity", identity)
            return
        diff = {k: (old.get(k), v) for k, v in identity.items() if old.get(k) != v}
        if diff:
            what = "; ".join(f"{k}: stored {a!r}, now {b!r}" for k, (a, b) in diff.items())
            raise ConfigError(f"'{self.dir}' holds results of a different run ({what}). Use another --out directory.")

    # -- records ---------------------------------------------------------------
    def done_keys(self) -> set[tuple[str, str, int]]:
        return {tuple(r) for r in self.db.execute("SELECT method, item_id, seed FROM records")}

    def put(self, method: str, item_id: str, seed: int, correct: bool, data: dict) -> bool:
        """Insert one record; returns False if it was already there (never double-counts)."""
        with self._lock:
            cur = self.db.execute(
                "INSERT OR IGNORE INTO records VALUES (?, ?, ?, ?, ?, ?)",
                (method, item_id, seed, int(correct), json.dumps(data), time.time()),
            )
            return cur.rowcount == 1

    def records(self, method: str | None = None) -> list[dict]:
        q = "SELECT data FROM records" + (" WHERE method=?" if method else "") + " ORDER BY created"
        return [json.loads(r[0]) for r in self.db.execute(q, (method,) if method else ())]

    def methods(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT method FROM records GROUP BY method ORDER BY MIN(created)")]

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM records").fetchone()[0]

    # -- oracle ----------------------------------------------------------------
    def oracle_done(self) -> set[tuple[str, int]]:
        return {tuple(r) for r in self.db.execute("SELECT item_id, seed FROM oracle")}

    def put_oracle(self, item_id: str, seed: int, data: dict) -> None:
        with self._lock:
            self.db.execute("INSERT OR IGNORE INTO oracle VALUES (?, ?, ?, ?)", (item_id, seed, json.dumps(data), time.time()))

    def oracle(self) -> list[dict]:
        return [json.loads(r[0]) for r in self.db.execute("SELECT data FROM oracle ORDER BY created")]

    def close(self) -> None:
        self.db.close()

    def put_many(self, rows: Iterable[tuple[str, str, int, bool, dict]]) -> None:
        for r in rows:
            self.put(*r)
