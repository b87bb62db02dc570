"""The probe file of `probe-exit`: `LinearProbe` and `load_probe` (format in `leanthink.probes`).

Separate from `leanthink.probes` (training), which needs the methods: the methods' model
loaders (`leanthink.loading`, the server's registry) read probe files without importing
the methods back.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ConfigError

FORMAT = "leanthink-probe/1"
LABEL = "the answer forced at this step end equals the gold answer"
POSITION = "last token of prompt + reasoning prefix ending at a step delimiter"


def question_hash(question: str) -> str:
    return hashlib.sha1(question.strip().encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- the probe


@dataclass
class LinearProbe:
    weights: np.ndarray
    bias: float
    mean: np.ndarray
    std: np.ndarray
    model_id: str = ""
    step_delimiter: str = "\n\n"
    meta: dict | None = None

    @property
    def dim(self) -> int:
        return int(self.weights.shape[0])

    def predict(self, h) -> float:
        """P(correct) for one hidden-state vector."""
        h = np.asarray(h, dtype=np.float64).reshape(-1)
        if h.shape[0] != self.dim:
            raise ConfigError(f"the probe expects hidden states of size {self.dim}, got {h.shape[0]}: "
                              "it was trained on another model")
        z = float(self.weights @ ((h - self.mean) / self.std) + self.bias)
        return float(_sigmoid(z))

    def seen(self, question: str) -> bool:
        """Was this question one of the training (or held-out) items?"""
        hashes = ((self.meta or {}).get("training") or {}).get("question_sha1") or []
        return question_hash(question) in set(hashes)


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.clip(z, -40, 40)))


#: Probes read recently, keyed by (resolved path, mtime): a few, so that a long-running
#: process that is given many probe files does not keep every one of them.
_CACHE: OrderedDict[tuple[str, float], LinearProbe] = OrderedDict()
_CACHE_SIZE = 8
_LOCK = threading.Lock()


def load_probe(path: str | Path) -> LinearProbe:
    """Read and check a probe file written by `train_probe`."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"probe file '{path}' does not exist; train one with `leanthink probe train`")
    key = (str(p.resolve()), p.stat().st_mtime)
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    try:
        d = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"probe file '{path}' is not valid JSON: {exc}") from None
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise ConfigError(f"'{path}' is not a leanthink probe file (expected format {FORMAT})")
    try:
        w = np.asarray(d["weights"], dtype=np.float64)
        mean = np.asarray(d["mean"], dtype=np.float64)
        std = np.asarray(d["std"], dtype=np.float64)
        bias = float(d["bias"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"probe file '{path}' is missing or has a bad field: {exc}") from None
    if w.ndim != 1 or w.shape != mean.shape or w.shape != std.shape or not np.all(std > 0):
        raise ConfigError(f"probe file '{path}': weights/mean/std must be vectors of one size, std > 0")
    probe = LinearProbe(w, bias, mean, std, d.get("model_id", ""), d.get("step_delimiter", "\n\n"), d)
    with _LOCK:
        _CACHE[key] = probe
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return probe


__all__ = ["LinearProbe", "load_probe", "question_hash", "FORMAT"]
