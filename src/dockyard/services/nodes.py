"""Connecting to nodes and recording their GPUs (found through NVML, or simulated)."""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy import select

from dockyard.config import LOCAL_NODE, NodeConfig
from dockyard.core.gpus import GpuFacts, parse_simulated_gpus
from dockyard.core.sharing import SlotFacts, parse_sharing, slot_layout
from dockyard.core.states import Status
from dockyard.db.models import Gpu, GpuAssignment, GpuSlot, Instance, Node, utcnow
from dockyard.runtimes import host_firewall
from dockyard.runtimes.base import Runtime
from dockyard.runtimes.connect import connect
from dockyard.services.platform import Platform

log = logging.getLogger(__name__)
GIB = 1024**3


def discover_gpus(config: NodeConfig, runtime: Runtime, probe_image: str) -> list[GpuFacts]:
    """The GPUs the node's configuration declares, else those its backend finds."""
    if config.simulated_gpus:
        return parse_simulated_gpus(config.simulated_gpus, config.name)
    return runtime.discover_gpus(probe_image)


def disk_root(platform: Platform, node: str) -> Path:
    """Where a node's sized disks live on the server's host: a folder per node, since two
    engines on one host (tests/engines.py) hold disks of the same name (a migration's)."""
    root = platform.settings.home / "disks"
    return root if node == LOCAL_NODE else root / "nodes" / node


def connect_nodes(platform: Platform, only_missing: bool = False) -> None:
    """Connect every configured node (or those not connected yet) and record it, its
    shares and its GPUs."""
    for config in platform.settings.node_configs():
        if only_missing and config.name in platform.runtimes:
            continue
        try:
            runtime = connect(config, platform.settings, disk_root(platform, config.name))
            resources = runtime.resources()
            gpus = discover_gpus(config, runtime, platform.settings.gpu_probe_image)
        except Exception as exc:  # an unreachable engine must not stop the others
            log.warning("node %s is offline: %s", config.name, exc)
            _record_offline(platform, config, str(exc))
            continue
        platform.runtimes[config.name] = runtime
        _record_node(platform, config, resources.cpus, resources.memory_bytes, gpus)
        if (config.name == LOCAL_NODE and config.runtime == "docker" and config.url.startswith("unix://")
                and platform.settings.protect_host):
            settings = platform.settings
            problem = host_firewall.protect_host([settings.network_pool, settings.cluster_network_pool],
                                                 settings.instance_host_open_ports + [settings.inside_port] * bool(settings.inside_port))
            if problem:  # the platform still runs; docs/security.md says what is then open
                log.warning("instances on node %s can reach this host: %s", config.name, problem)


def _shares(config: NodeConfig, cpus: float, memory: int, gpu_count: int) -> tuple[float, int]:
    per = max(gpu_count, 1)
    cpus_per_gpu = config.cpus_per_gpu or cpus / per
    memory_per_gpu = int(config.memory_per_gpu_gb * GIB) if config.memory_per_gpu_gb else memory // per
    return cpus_per_gpu, memory_per_gpu


def _record_offline(platform: Platform, config: NodeConfig, reason: str) -> None:
    with platform.sessions.begin() as db:
        node = db.get(Node, config.name) or Node(name=config.name, url=config.url)
        node.online, node.status_reason = False, reason
        db.add(node)


def _record_node(platform: Platform, config: NodeConfig, cpus: float, memory: int, gpus: list[GpuFacts]) -> None:
    cpus_per_gpu, memory_per_gpu = _shares(config, cpus, memory, len(gpus))
    with platform.sessions.begin() as db:
        node = db.get(Node, config.name) or Node(name=config.name)
        node.url, node.public_host = config.url, config.ssh_host()
        # With lost instances it is put back online by the liveness check (services/liveness.py),
        # once they are stopped and its containers looked at.
        lost = db.scalars(select(Instance.id).where(Instance.node_name == config.name,
                                                    Instance.status == Status.LOST)).first()
        node.online, node.status_reason = lost is None, None
        node.cpus, node.memory_bytes = cpus, memory
        node.cpus_per_gpu, node.memory_per_gpu_bytes = cpus_per_gpu, memory_per_gpu
        node.driver_version = gpus[0].driver_version if gpus else None
        node.cuda_version = gpus[0].cuda_version if gpus else None
        node.last_seen_at = utcnow()
        db.add(node)
        db.flush()
        known = {g.uuid: g for g in db.scalars(select(Gpu).where(Gpu.node_name == config.name))}
        seen = {facts.uuid for facts in gpus}
        for uuid, gpu in known.items():
            if uuid not in seen:
                # Kept for the instances that name it, never placed; its index is freed.
                gpu.present, gpu.index = False, -gpu.id
        db.flush()
        sharing = parse_sharing(config.gpu_sharing)
        for facts in gpus:
            gpu = known.get(facts.uuid) or Gpu(node_name=config.name, uuid=facts.uuid)
            gpu.index, gpu.model, gpu.memory_mb = facts.index, facts.model, facts.memory_mb
            gpu.simulated, gpu.present = facts.simulated, True
            db.add(gpu)
            db.flush()
            _record_slots(db, gpu, *slot_layout(facts, sharing))


def _record_slots(db, gpu: Gpu, mode: str | None, layout: list[SlotFacts]) -> None:
    """Make the GPU's slot rows match its node's sharing. A GPU someone holds keeps its
    slots (cutting it anew would free parts that are in use) until it is free at a later
    connect."""
    current = db.scalars(select(GpuSlot).where(GpuSlot.gpu_id == gpu.id).order_by(GpuSlot.slot)).all()
    if [SlotFacts(s.slot, s.mig_uuid, s.mig_profile, s.memory_mb) for s in current] == layout and gpu.sharing == mode:
        return
    if db.scalar(select(GpuAssignment.slot_id).where(GpuAssignment.gpu_id == gpu.id).limit(1)) is not None:
        log.warning("GPU %s of node %s is in use: its sharing changes once it is free (at a later start)",
                    gpu.index, gpu.node_name)
        return
    for slot in current:
        db.delete(slot)
    db.flush()
    gpu.sharing = mode
    for part in layout:
        db.add(GpuSlot(gpu_id=gpu.id, slot=part.slot, mig_uuid=part.mig_uuid, mig_profile=part.profile,
                       memory_mb=part.memory_mb))
