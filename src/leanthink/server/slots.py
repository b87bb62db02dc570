"""Admission: at most `limit` requests generate at once; at most `queue` wait, in FIFO order."""

from __future__ import annotations

import asyncio
from collections import deque

from starlette.requests import Request

from .protocol import ApiError


class Slots:
    """At most `limit` requests generate; at most `queue` wait (FIFO); beyond that, 429."""

    def __init__(self, limit: int, queue: int):
        self.limit = limit
        self.queue_limit = queue
        self.running = 0
        self.waiters: deque[asyncio.Future] = deque()

    def try_enter(self) -> asyncio.Future | None:
        """None: a slot is ours now. A future: we are queued and must await it."""
        if self.running < self.limit and not self.waiters:
            self.running += 1
            return None
        if len(self.waiters) >= self.queue_limit:
            raise ApiError(429, f"the server is at capacity ({self.limit} running, {len(self.waiters)} queued); "
                                "retry later", code="queue_full", headers={"Retry-After": "1"})
        fut = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        return fut

    def abandon(self, fut: asyncio.Future) -> None:
        """A queued request gives up (client gone, timeout)."""
        if fut.done() and not fut.cancelled():
            self.release()  # the slot was handed to us just now: pass it on
            return
        fut.cancel()
        try:
            self.waiters.remove(fut)
        except ValueError:
            pass

    def release(self) -> None:
        while self.waiters:
            w = self.waiters.popleft()
            if not w.done():
                w.set_result(True)  # hand the slot over; `running` is unchanged
                return
        self.running -= 1


async def wait_disconnect(request: Request) -> None:
    """Returns when the client has gone away (raced against a slot or a result)."""
    while True:
        msg = await request.receive()
        if msg["type"] == "http.disconnect":
            return
