"""Notes when someone uses a running instance: an established connection to port 22 in its
container sets its last_ssh_at; a JupyterLab kernel executing, or a kernel or terminal that
JupyterLab saw work since, sets its last_jupyter_at (an open tab that only polls does not:
the proxy counts only requests that change something)."""

from __future__ import annotations

import json
import logging

import httpx
from sqlalchemy import select

from dockyard.access.targets import JUPYTER_PORT, PROXY_SECRET_HEADER
from dockyard.background.loop import Loop
from dockyard.core.activity import has_established, jupyter_active_at
from dockyard.core.states import Status
from dockyard.db.models import Instance, utcnow
from dockyard.runtimes.base import RuntimeError_
from dockyard.services.held import held
from dockyard.services.platform import Platform

log = logging.getLogger(__name__)
SSH_PORT = 22
JUPYTER_TIMEOUT_S = 2.0
JUPYTER_MAX_BYTES = 1 << 20  # a JupyterLab with thousands of kernels is not one to trust anyway


def record_ssh_activity(platform: Platform) -> None:
    with platform.sessions.begin() as db:
        running = [(i.id, i.node_name, held(i)) for i in db.scalars(
            select(Instance).where(Instance.status == Status.RUNNING, Instance.ssh_port.is_not(None)))]
    for instance_id, node, now in running:
        if node not in platform.runtimes or not now.container_id:
            continue
        try:
            code, output = platform.instances(node).tool(now, ["cat", "/proc/net/tcp", "/proc/net/tcp6"],
                                                         timeout_s=5, max_bytes=4 * 1024 * 1024)
        except RuntimeError_:
            continue
        if has_established(output.decode(errors="replace"), SSH_PORT):
            with platform.sessions.begin() as db:
                db.get(Instance, instance_id).last_ssh_at = utcnow()


def _jupyter_get(http: httpx.Client, url: str, secret: str) -> list:
    """One of JupyterLab's lists, through the proxy's secret, bounded in time and size;
    [] when there is no JupyterLab (an image without one) or it answers nonsense."""
    try:
        with http.stream("GET", url, headers={PROXY_SECRET_HEADER: secret}) as response:
            if response.status_code != 200:
                return []
            body = b""
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > JUPYTER_MAX_BYTES:
                    return []
        found = json.loads(body)
    except (httpx.HTTPError, ValueError):
        return []
    return found if isinstance(found, list) else []


def record_jupyter_activity(platform: Platform) -> None:
    with platform.sessions.begin() as db:
        running = [(i.id, i.node_name, held(i), i.jupyter_token, i.last_jupyter_at) for i in db.scalars(
            select(Instance).where(Instance.status == Status.RUNNING, Instance.container_id.is_not(None),
                                   Instance.jupyter_token.is_not(None)))]
    with httpx.Client(timeout=JUPYTER_TIMEOUT_S) as http:
        for instance_id, node, now, secret, last in running:
            try:
                info = platform.instances(node).observe(now) if node in platform.runtimes else None
            except RuntimeError_:
                continue
            if info is None or not info.ip:
                continue
            base = f"http://{info.ip}:{JUPYTER_PORT}/instances/{instance_id}/jupyter/api"
            kernels = _jupyter_get(http, f"{base}/kernels", secret)
            terminals = _jupyter_get(http, f"{base}/terminals", secret)
            active = jupyter_active_at(kernels, terminals, utcnow())
            if active is not None and (last is None or active > last):
                with platform.sessions.begin() as db:
                    instance = db.get(Instance, instance_id)
                    if instance.last_jupyter_at is None or active > instance.last_jupyter_at:
                        instance.last_jupyter_at = active


class ActivityWatch(Loop):
    name = "activity"

    def __init__(self, platform: Platform, interval_s: float):
        super().__init__(interval_s)
        self.platform = platform

    def run_once(self) -> None:
        record_ssh_activity(self.platform)
        record_jupyter_activity(self.platform)

