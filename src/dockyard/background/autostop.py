"""The auto-stop loop: every `autostop_interval_s`, one pass of services/autostop.py's
Stopper over the running instances. Each pass is idempotent."""

from __future__ import annotations

import logging

from dockyard.background.loop import Loop
from dockyard.services.autostop import GpuSamples, Stopper, SystemDisks
from dockyard.background.driver import Driver
from dockyard.services.platform import Platform

log = logging.getLogger(__name__)


class AutoStop(Loop):
    name = "autostop"

    def __init__(self, platform: Platform, driver: Driver, gpu_samples: GpuSamples, system_disks: SystemDisks):
        super().__init__(platform.settings.autostop_interval_s)
        self.platform = platform
        self.stopper = Stopper(platform, driver, gpu_samples, system_disks=system_disks)

    def run_once(self) -> None:
        for instance_id in self.stopper.run():
            log.info("auto-stop: stopping instance %s", instance_id)

