"""GPU facts that need no hardware: simulated GPU declarations and driver/CUDA rules."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from dockyard.core.errors import InvalidInput

# A current driver for simulated GPUs that name none (CUDA 13.0 capable).
DEFAULT_SIMULATED_DRIVER = "580.95.05"

# Lowest Linux driver branch that supports each CUDA toolkit version (NVIDIA's
# CUDA release notes, table 3). Newest first.
_DRIVER_FOR_CUDA: list[tuple[str, int]] = [
    ("13.0", 580),
    ("12.9", 575),
    ("12.8", 570),
    ("12.6", 560),
    ("12.5", 555),
    ("12.4", 550),
    ("12.3", 545),
    ("12.2", 535),
    ("12.1", 530),
    ("12.0", 525),
    ("11.8", 520),
    ("11.7", 515),
    ("11.6", 510),
    ("11.5", 495),
    ("11.4", 470),
]

# Memory of well-known models, for simulated GPUs whose name does not say it.
_KNOWN_MEMORY_MB = {
    "H100": 81559, "H200": 143771, "A100": 40960, "L40S": 46068, "L4": 23034,
    "A10": 23028, "T4": 15360, "V100": 32768, "RTX-4090": 24564, "RTX-3090": 24576,
    "RTX-A6000": 49140,
}

_MODEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,47}$")
_DRIVER_RE = re.compile(r"^\d{3}(\.\d{1,3}){1,2}$")


@dataclass(frozen=True)
class MigFacts:
    """One MIG instance of a GPU in MIG mode: what a container is given by its UUID."""

    uuid: str
    profile: str  # '1g.18gb'
    memory_mb: int


@dataclass(frozen=True)
class GpuFacts:
    """One GPU as a node reports it, real or simulated."""

    index: int
    uuid: str
    model: str
    memory_mb: int
    driver_version: str
    cuda_version: str
    simulated: bool
    mig: tuple[MigFacts, ...] = ()  # its MIG instances, when it is in MIG mode


def driver_branch(driver_version: str | None) -> int:
    """'550.54.15' -> 550; a node without a driver is 0."""
    return int(driver_version.split(".")[0]) if driver_version else 0


def driver_runs(driver_version: str | None, min_driver: int) -> bool:
    """Whether a node with this driver runs an image that needs `min_driver`. A node
    without a driver has no GPUs: anything runs there, on the CPU."""
    return driver_version is None or driver_branch(driver_version) >= min_driver


def max_cuda_for_driver(driver_version: str) -> str:
    """The newest CUDA version a driver runs, e.g. '550.54.15' -> '12.4'."""
    branch = driver_branch(driver_version)
    for cuda, minimum in _DRIVER_FOR_CUDA:
        if branch >= minimum:
            return cuda
    return "11.0"


def memory_for_model(model: str) -> int:
    match = re.search(r"(\d+)\s*GB", model, re.IGNORECASE)
    if match:
        return int(match.group(1)) * 1024
    for known, memory in _KNOWN_MEMORY_MB.items():
        if model.upper().startswith(known.upper()):
            return memory
    return 24 * 1024


def parse_simulated_gpus(spec: str, node: str) -> list[GpuFacts]:
    """Parse 'A100-80GB:4,RTX-4090:2@550.54.15' into simulated GPUs of one node.

    A node has one NVIDIA driver: a driver named on any part applies to all its GPUs,
    and two different ones are refused. UUIDs are derived from node, model and index so
    they stay the same across restarts.
    """
    parts: list[tuple[str, int]] = []
    drivers: set[str] = set()
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        model_count, _, driver = part.partition("@")
        model, sep, count_text = model_count.partition(":")
        model, driver = model.strip(), driver.strip()
        if not _MODEL_RE.match(model):
            raise InvalidInput(f"simulated GPUs: bad model name {model!r} in {spec!r}")
        if not sep:
            count_text = "1"
        if not count_text.strip().isdecimal() or int(count_text) < 1:
            raise InvalidInput(f"simulated GPUs: bad count {count_text!r} for {model} in {spec!r}")
        if driver:
            if not _DRIVER_RE.match(driver):
                raise InvalidInput(f"simulated GPUs: bad driver version {driver!r} in {spec!r}")
            drivers.add(driver)
        parts.append((model, int(count_text)))
    if len(drivers) > 1:
        raise InvalidInput(f"simulated GPUs: one node has one NVIDIA driver, {spec!r} names {len(drivers)}")
    driver = drivers.pop() if drivers else DEFAULT_SIMULATED_DRIVER
    gpus: list[GpuFacts] = []
    for model, count in parts:
        for _ in range(count):
            index = len(gpus)
            gpus.append(
                GpuFacts(
                    index=index,
                    uuid="GPU-" + str(uuid.uuid5(uuid.NAMESPACE_URL, f"dockyard-sim/{node}/{model}/{index}")),
                    model=model,
                    memory_mb=memory_for_model(model),
                    driver_version=driver,
                    cuda_version=max_cuda_for_driver(driver),
                    simulated=True,
                )
            )
    return gpus
