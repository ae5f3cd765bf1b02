"""Per-user caps on requests that hold a server worker for long (waits, log follows, execs),
so that one user's many cannot take every worker from the others.

    with platform.fair_share.place(user, "exec"):
        ...  # 429 (TooManyRequests) if the user already has max_execs_per_user running

A streamed answer takes its place before it starts and hands it to the stream, which keeps
it until the stream ends: `with ... as place: return StreamingResponse(place.kept(chunks))`.
"""

from __future__ import annotations

import threading
import weakref
from collections import Counter
from typing import AsyncGenerator

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

    def place(self, user, kind: str) -> Place:
        """Take one of the user's places of this kind (`user`: a User or its id), or 429."""
        user_id = getattr(user, "id", user)
        cap = self.caps[kind]
        with self._lock:
            if self._held[(user_id, kind)] >= cap:
                raise TooManyRequests(f"you have {cap} {_WHAT[kind]} open already, the limit per user "
                                      f"({_SETTING[kind]}); let one finish and retry")
            self._held[(user_id, kind)] += 1
        return Place(self, (user_id, kind))

    def held(self, user, kind: str) -> int:
        with self._lock:
            return self._held.get((getattr(user, "id", user), kind), 0)


class Place:
    """One taken place, given back once (however often `give_back` is called): at the end
    of its `with`, or, if a stream was made with `kept`, when that stream ends."""

    def __init__(self, share: FairShare, key: tuple[int, str]):
        self._share, self._key, self._given, self._streamed = share, key, False, False

    def __enter__(self) -> Place:
        return self

    def __exit__(self, *_exc) -> None:
        if not self._streamed:
            self.give_back()

    def give_back(self) -> None:
        share = self._share
        with share._lock:
            if self._given:
                return
            self._given = True
            share._held[self._key] -= 1
            if share._held[self._key] <= 0:
                del share._held[self._key]

    def kept(self, chunks: AsyncGenerator[bytes, None]) -> AsyncGenerator[bytes, None]:
        """`chunks` (e.g. api/streams.pumped's), keeping this place while they are sent; it
        is given back when they end, when the client leaves, or when the stream is dropped
        unread (a client gone before the answer began)."""
        stream = self._kept(chunks)
        weakref.finalize(stream, self.give_back)
        self._streamed = True
        return stream

    async def _kept(self, chunks: AsyncGenerator[bytes, None]) -> AsyncGenerator[bytes, None]:
        try:
            async for chunk in chunks:
                yield chunk
        finally:
            self.give_back()  # first: the await below may itself be cancelled
            await chunks.aclose()  # closing this stream early does not close `chunks` by itself
