"""What every background loop shares: a daemon thread that runs a pass, waits, and runs
the next, until stopped. A pass that fails is logged and the next one retries: every
pass is idempotent, so a missed or repeated one does no harm."""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)


class Loop:
    name = "loop"

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        """Until a stopped loop's pass in progress (and `finish`) ends, or `timeout`."""
        if self._thread.is_alive():
            self._thread.join(timeout)

    def run_once(self) -> None:
        raise NotImplementedError

    def wait(self) -> None:
        """Until the next pass is due (returns early once stopped): `interval_s`, unless a
        loop knows better (an event that wakes it, a deadline of its own)."""
        self._stop.wait(self.interval_s)

    def finish(self) -> None:
        """After the last pass, on the loop's own thread."""

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:
                log.exception("%s pass failed; the next one retries", self.name)
            self.wait()
        self.finish()
