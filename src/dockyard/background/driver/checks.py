"""The self-test of an image of our family (dockyard-check), run once an instance runs."""

from __future__ import annotations

import json

from dockyard.core.states import Status
from dockyard.db.models import Instance, utcnow
from dockyard.runtimes.base import RuntimeError_
from dockyard.services.held import held
from dockyard.services.platform import Platform


def check_environment(platform: Platform, instance_id: str) -> dict | None:
    """Run the image's self-test (dockyard-check) and keep its result on the instance."""
    with platform.sessions.begin() as db:
        instance = db.get(Instance, instance_id)
    if instance.status != Status.RUNNING or not instance.container_id:
        return None
    try:
        # The image's own program: bounded, since a tenant may have replaced it.
        code, output = platform.instances(instance.node_name).exec(
            held(instance), ["dockyard-check"], timeout_s=platform.settings.check_timeout_s, max_bytes=256 * 1024)
        result = json.loads(output.decode(errors="replace").strip().splitlines()[-1])
        if not isinstance(result, dict):
            raise ValueError("not a JSON object")
    except (RuntimeError_, ValueError, IndexError) as exc:
        result = {"ok": False, "error": f"dockyard-check did not run: {exc}"}
    result["checked_at"] = utcnow().isoformat()
    with platform.sessions.begin() as db:
        db.get(Instance, instance_id).env_check = result
    return result
