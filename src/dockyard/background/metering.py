"""The settlement loop: every `settle_interval_s` (at most a minute), and soon
after any status change so that a stop is settled at once (after the settle lag)."""

from __future__ import annotations

import logging
import time

from dockyard.background.loop import Loop
from dockyard.services.billing import settlement
from dockyard.services.platform import Platform

log = logging.getLogger(__name__)


class Metering(Loop):
    name = "metering"

    def __init__(self, platform: Platform, driver=None):
        super().__init__(platform.settings.settle_interval_s)
        self.platform, self.driver = platform, driver
        self._seen = platform.generation

    def run_once(self) -> None:
        self._seen = self.platform.generation
        settlement.settle(self.platform, driver=self.driver)  # postings are idempotent

    def wait(self) -> None:
        settings = self.platform.settings
        deadline = time.monotonic() + self.interval_s
        while not self._stop.is_set() and time.monotonic() < deadline:
            self._stop.wait(min(0.5, max(0.0, deadline - time.monotonic())))
            if self.platform.generation != self._seen:  # a status changed: settle it after the lag
                self._stop.wait(settings.settle_lag_s + 0.2)
                return
