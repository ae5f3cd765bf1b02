"""The liveness watch: services/liveness.py's check, every reconcile interval, on a
thread of its own (an engine call hung on the reconciler's thread cannot delay it)."""

from __future__ import annotations

from dockyard.background.loop import Loop
from dockyard.background.reconciler import reconcile_node
from dockyard.services import liveness
from dockyard.background.driver import Driver
from dockyard.services.platform import Platform


class NodeWatch(Loop):
    name = "liveness"

    def __init__(self, platform: Platform, driver: Driver):
        super().__init__(platform.settings.reconcile_interval_s)
        self.platform, self.driver = platform, driver

    def run_once(self) -> None:
        liveness.check(self.platform, lambda node: reconcile_node(self.platform, self.driver, node))

