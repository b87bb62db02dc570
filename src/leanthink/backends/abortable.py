"""Blocking upstream reads that a cancel flag can interrupt within a bounded time.

Why: a synchronous httpx read blocks in `recv` until the upstream sends a byte or the read
timeout (minutes) passes. A caller that checks its cancel flag between chunks (the proxy's
worker does) therefore cannot stop a stalled upstream: the request's thread and slot stay
busy and shutdown waits for them. Closing the socket from another thread does not wake a
blocked `recv` on Linux, and an httpx read timeout cannot be resumed.

How: the client's connection pool gets a network backend whose streams read in short
slices (`POLL_S`). Between slices, a thread that runs inside `abort_when(check)` calls
`check()`, which raises to abort; httpcore then closes that connection. Threads outside
`abort_when` read exactly as before (one read with the full timeout).
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import httpcore

POLL_S = 0.2
"""How often a blocked read looks at the cancel flag: the bound on how late an abort lands."""

_local = threading.local()


@contextmanager
def abort_when(check: Callable[[], None]) -> Iterator[None]:
    """While active in this thread, blocked reads of abortable clients call `check()` every
    POLL_S seconds; whatever it raises ends the read (and closes that connection)."""
    prev = getattr(_local, "check", None)
    _local.check = check
    try:
        yield
    finally:
        _local.check = prev


class _AbortableStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream):
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if getattr(_local, "check", None) is None:
            return self._inner.read(max_bytes, timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            check = getattr(_local, "check", None)
            if check is not None:
                check()
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise httpcore.ReadTimeout("timed out")
            try:
                # A timed-out recv consumed nothing (TLS keeps a partial record buffered),
                # so the read can simply be tried again.
                return self._inner.read(max_bytes, POLL_S if left is None else min(POLL_S, left))
            except httpcore.ReadTimeout:
                continue

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, timeout)

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context, server_hostname: str | None = None, timeout: float | None = None):
        return _AbortableStream(self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _AbortableBackend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend):
        self._inner = inner

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        return _AbortableStream(self._inner.connect_tcp(host, port, timeout, local_address, socket_options))

    def connect_unix_socket(self, path, timeout=None, socket_options=None):
        return _AbortableStream(self._inner.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def make_abortable(client) -> bool:
    """Give a sync `httpx.Client` abortable reads (see the module doc). False if this httpx
    version hides its connection pool differently (reads then block as before)."""
    pool = getattr(getattr(client, "_transport", None), "_pool", None)
    inner = getattr(pool, "_network_backend", None)
    if inner is None:
        return False
    if not isinstance(inner, _AbortableBackend):
        pool._network_backend = _AbortableBackend(inner)
    return True
