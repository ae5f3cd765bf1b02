"""The engine names of an instance's objects: the same on every node, so that the
driver, the reconciler, clones and migrations find what another of them made."""

from __future__ import annotations

from dockyard.services.platform import Platform


def container_name(platform: Platform, instance_id: str) -> str:
    return f"dy-{platform.deployment}-{instance_id}"


def data_volume(platform: Platform, instance_id: str) -> str:
    return f"dy-{platform.deployment}-{instance_id}-data"


def user_network(platform: Platform, owner_id: int) -> str:
    return f"dy-{platform.deployment}-user{owner_id}"


def mps_daemon_name(platform: Platform, gpu_uuid: str) -> str:
    """One MPS daemon container (and pipe volume) per shared GPU and deployment."""
    return f"dy-{platform.deployment}-mps-{gpu_uuid.removeprefix('GPU-')}"
