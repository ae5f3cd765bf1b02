"""Notes when someone is logged in over SSH: an established connection to port 22 in
the instance's container sets its last_ssh_at (JupyterLab's is set by the proxy)."""

from __future__ import annotations

import logging

from sqlalchemy import select

from dockyard.background.loop import Loop
from dockyard.core.activity import has_established
from dockyard.core.states import Status
from dockyard.db.models import Instance, utcnow
from dockyard.runtimes.base import RuntimeError_
from dockyard.services.platform import Platform

log = logging.getLogger(__name__)
SSH_PORT = 22


def record_ssh_activity(platform: Platform) -> None:
    with platform.sessions.begin() as db:
        running = [(i.id, i.node_name, i.container_id) for i in db.scalars(
            select(Instance).where(Instance.status == Status.RUNNING, Instance.ssh_port.is_not(None)))]
    for instance_id, node, container_id in running:
        runtime = platform.runtimes.get(node)
        if runtime is None or not container_id:
            continue
        try:
            code, output = runtime.tool(container_id, ["cat", "/proc/net/tcp", "/proc/net/tcp6"],
                                        timeout_s=5, max_bytes=4 * 1024 * 1024)
        except RuntimeError_:
            continue
        if has_established(output.decode(errors="replace"), SSH_PORT):
            with platform.sessions.begin() as db:
                db.get(Instance, instance_id).last_ssh_at = utcnow()


class ActivityWatch(Loop):
    name = "activity"

    def __init__(self, platform: Platform, interval_s: float):
        super().__init__()
        self.platform, self.interval_s = platform, interval_s

    def run_once(self) -> None:
        record_ssh_activity(self.platform)

    def wait(self) -> None:
        self._stop.wait(self.interval_s)
