"""One instance's monitoring view, for its owner only: the sampler's recent samples, its
GPUs, its data disk and the advisor's findings. The API and the console both serve it."""

from __future__ import annotations

import time
from dataclasses import asdict
from datetime import datetime

from sqlalchemy.orm import Session

from dockyard.core import advisor
from dockyard.core.errors import NotFound
from dockyard.core.metrics import MetricsStore
from dockyard.db.models import Instance, User
from dockyard.services.allocation import assigned_gpus
from dockyard.services.instances import get_owned
from dockyard.services.platform import Platform


def instance_metrics(platform: Platform, store: MetricsStore, user: User, key: str) -> dict:
    settings = platform.settings
    with platform.sessions.begin() as db:
        instance = get_owned(db, user, key)
        if instance.owner_id != user.id:  # metrics are the owner's, admins included
            raise NotFound(f"instance {key!r} not found")
        view = {"id": instance.id, "name": instance.name, "status": instance.status,
                "interval_s": settings.metrics_interval_s, "window_s": settings.metrics_window_s,
                "gpus": [{"index": g.index, "uuid": g.uuid, "model": g.model, "simulated": g.simulated}
                         for g in assigned_gpus(db, instance.id)]}
        facts = _facts(db, instance, view["gpus"], settings.metrics_interval_s)
    samples, disk, now = *store.read(view["id"]), time.time()
    findings = advisor.advise(facts, samples, disk, now)
    system_disk = store.read_system_disk(view["id"])
    return {**view, "now": now, "samples": [asdict(s) for s in samples], "disk": asdict(disk) if disk else None,
            "system_disk": asdict(system_disk) if system_disk else None,
            "findings": [{"rule": f.rule, "severity": f.severity, "params": f.params, "message": f.message,
                          "action": f.action} for f in findings]}


def _facts(db: Session, instance: Instance, gpus: list[dict], interval_s: float) -> advisor.Facts:
    accessed = [t for t in (instance.last_ssh_at, instance.last_jupyter_at) if t is not None]
    return advisor.Facts(
        status=instance.status, real_gpus=sum(1 for g in gpus if not g["simulated"]), interval_s=interval_s,
        started_at=_unix(instance.started_at), last_access_at=_unix(max(accessed)) if accessed else None,
        auto_stop_idle=instance.auto_stop_idle_minutes is not None, env_check=instance.env_check)


def _unix(value: datetime | None) -> float | None:
    return value.timestamp() if value else None
