"""The auto-stop loop: every `autostop_interval_s`, one pass of services/autostop.py's
Stopper over the running instances, and one at once when woken (a system disk read past
its limit must not keep writing for a minute). Each pass is idempotent."""

from __future__ import annotations

import logging
import threading

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
        self._woken = threading.Event()

    def wake(self) -> None:
        """A pass now rather than at the next interval."""
        self._woken.set()

    def wait(self) -> None:
        self._woken.wait(self.interval_s)
        self._woken.clear()

    def stop(self) -> None:
        super().stop()
        self._woken.set()

    def run_once(self) -> None:
        for instance_id in self.stopper.run():
            log.info("auto-stop: stopping instance %s", instance_id)

