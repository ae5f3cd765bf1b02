"""Per-user caps on requests that hold a server worker for long (waits, log follows, execs),
so that one user's many cannot take every worker from the others.

    with platform.fair_share.hold(user, "exec"):
        ...  # 429 (TooManyRequests) if the user already has max_execs_per_user running

A streamed answer keeps its place until the stream ends: `stream(user, kind, chunks)`.
"""

from __future__ import annotations

import threading
from collections import Counter
from contextlib import contextmanager
from typing import AsyncIterator, Iterable, Iterator

import anyio.to_thread

from dockyard.config import Settings
from dockyard.core.errors import TooManyRequests

WAIT, LOGS, EXEC = "wait", "logs", "exec"
_WHAT = {WAIT: "waiting requests", LOGS: "log follows", EXEC: "execs"}
_SETTING = {WAIT: "max_waits_per_user", LOGS: "max_log_follows_per_user", EXEC: "max_execs_per_user"}


class FairShare:
    def __init__(self, settings: Settings):
        self.caps = {kind: getattr(settings, name) for kind, name in _SETTING.items()}
        self._held: Counter = Counter()  # (user id, kind): only users with one open are keys
        self._lock = threading.Lock()

    def _take(self, user_id: int, kind: str) -> None:
        cap = self.caps[kind]
        with self._lock:
            if self._held[(user_id, kind)] >= cap:
                raise TooManyRequests(f"you have {cap} {_WHAT[kind]} open already, the limit per user "
                                      f"({_SETTING[kind]}); let one finish and retry")
            self._held[(user_id, kind)] += 1

    def _give(self, user_id: int, kind: str) -> None:
        with self._lock:
            self._held[(user_id, kind)] -= 1
            if self._held[(user_id, kind)] <= 0:
                del self._held[(user_id, kind)]

    @contextmanager
    def hold(self, user, kind: str) -> Iterator[None]:
        """`user`: a User or its id."""
        user_id = getattr(user, "id", user)
        self._take(user_id, kind)
        try:
            yield
        finally:
            self._give(user_id, kind)

    def stream(self, user, kind: str, chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
        """Take a place now (429 at once if none is free) and keep it while `chunks` are
        sent. Each chunk is read in a worker thread; when the client leaves, `chunks` is
        closed (a blocked read fails and its thread ends) and the place is given back."""
        user_id = getattr(user, "id", user)
        self._take(user_id, kind)
        return self._streaming(user_id, kind, chunks)

    async def _streaming(self, user_id: int, kind: str, chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
        iterator = iter(chunks)
        try:
            while (chunk := await anyio.to_thread.run_sync(next, iterator, None, abandon_on_cancel=True)) is not None:
                yield chunk
        finally:
            close = getattr(chunks, "close", None)
            if close:
                close()
            self._give(user_id, kind)

    def held(self, user, kind: str) -> int:
        with self._lock:
            return self._held.get((getattr(user, "id", user), kind), 0)
