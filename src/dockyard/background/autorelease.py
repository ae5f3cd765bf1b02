"""The auto-release loop (docs/volumes.md): every `autorelease_interval_s`, notices and
releases for instances left stopped (services/autorelease.py). Each pass is idempotent."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Callable

from dockyard.background.loop import Loop
from dockyard.db.models import utcnow
from dockyard.services import autorelease
from dockyard.background.driver import Driver
from dockyard.services.platform import Platform

log = logging.getLogger(__name__)


class AutoRelease(Loop):
    name = "autorelease"

    def __init__(self, platform: Platform, driver: Driver, clock: Callable[[], datetime] = utcnow):
        super().__init__(platform.settings.autorelease_interval_s)
        self.platform, self.driver, self.clock = platform, driver, clock

    def run_once(self) -> None:
        for instance_id in autorelease.run_pass(self.platform, self.clock()):
            log.info("auto-release: releasing instance %s", instance_id)
            self.driver.kick(instance_id)

