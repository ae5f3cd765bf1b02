"""The settlement loop (issue 5): every `settle_interval_s` (at most a minute), and soon
after any status change so that a stop is settled at once (after the settle lag)."""

from __future__ import annotations

import logging
import threading
import time

from dockyard.services import billing
from dockyard.services.platform import Platform

log = logging.getLogger(__name__)


class Metering:
    def __init__(self, platform: Platform, driver=None):
        self.platform, self.driver = platform, driver
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="metering", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        settings = self.platform.settings
        while not self._stop.is_set():
            seen = self.platform.generation
            try:
                billing.settle(self.platform, driver=self.driver)
            except Exception:
                log.exception("settlement failed; the next cycle retries (postings are idempotent)")
            deadline = time.monotonic() + settings.settle_interval_s
            while not self._stop.is_set() and time.monotonic() < deadline:
                self._stop.wait(min(0.5, max(0.0, deadline - time.monotonic())))
                if self.platform.generation != seen:  # a status changed: settle it after the lag
                    self._stop.wait(settings.settle_lag_s + 0.2)
                    break
