"""The auto-stop loop (issue 7): every `autostop_interval_s`, stop the running instances
whose policy says so (services/autostop.py). Each pass is idempotent."""

from __future__ import annotations

import logging

from dockyard.background.loop import Loop
from dockyard.services import autostop
from dockyard.services.driver import Driver
from dockyard.services.platform import Platform

log = logging.getLogger(__name__)


class AutoStop(Loop):
    name = "autostop"

    def __init__(self, platform: Platform, driver: Driver):
        super().__init__()
        self.platform, self.driver = platform, driver

    def run_once(self) -> None:
        for instance_id in autostop.stop_due(self.platform, self.driver):
            log.info("auto-stop: stopping instance %s", instance_id)

    def wait(self) -> None:
        self._stop.wait(self.platform.settings.autostop_interval_s)
