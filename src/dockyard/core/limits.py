"""Bounded in-memory counters keyed by what clients send (user names, addresses): pure
logic, the clock passed in, so a flood of new keys costs bounded memory."""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from typing import Callable, Hashable


class BoundedDict(OrderedDict):
    """A dict that keeps at most `max_keys` entries, dropping the least recently set."""

    def __init__(self, max_keys: int):
        super().__init__()
        self.max_keys = max_keys

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.max_keys:
            self.popitem(last=False)


class FailureWindow:
    """At most `limit` events per key in any `window_s` seconds. Keys whose events have all
    aged out are forgotten; past `max_keys` the stalest keys go first."""

    def __init__(self, limit: int, window_s: float, max_keys: int = 10_000,
                 clock: Callable[[], float] = time.monotonic):
        self.limit, self.window_s, self.clock = limit, window_s, clock
        self._events: BoundedDict = BoundedDict(max_keys)

    def _recent(self, key: Hashable) -> deque:
        times = self._events.get(key)
        if times is None:
            return deque()
        cutoff = self.clock() - self.window_s
        while times and times[0] <= cutoff:
            times.popleft()
        if not times:
            del self._events[key]
        return times

    def retry_after(self, key: Hashable) -> float:
        """0 if `key` may try now, else the seconds until its oldest event ages out."""
        times = self._recent(key)
        if len(times) < self.limit:
            return 0.0
        return max(0.0, times[0] + self.window_s - self.clock())

    def record(self, key: Hashable) -> None:
        times = self._recent(key)
        times.append(self.clock())
        while len(times) > self.limit:  # older ones cannot matter any more
            times.popleft()
        self._events[key] = times

    def forget(self, key: Hashable) -> None:
        self._events.pop(key, None)

    def __len__(self) -> int:
        return len(self._events)
