"""Find the real GPUs of a node: through NVML locally, or nvidia-smi in a container remotely.

Imports only the stdlib and dockyard.core at load time, so it works on GPU-less machines
and where the docker package is missing; pynvml and docker are imported when used.
"""

from __future__ import annotations

import dataclasses
import re

from dockyard.core.gpus import GpuFacts, MigFacts, max_cuda_for_driver
from dockyard.core.sharing import is_mig_profile, mig_memory_mb

# The query discover_with_container runs; parse_nvidia_smi reads its output.
NVIDIA_SMI_QUERY = [
    "nvidia-smi",
    "--query-gpu=index,uuid,name,memory.total,driver_version",
    "--format=csv,noheader,nounits",
]
# Then `nvidia-smi -L`, which lists the MIG instances of GPUs in MIG mode under their GPU.
LIST_SEPARATOR = "--- nvidia-smi -L ---"
_LIST_GPU_RE = re.compile(r"^GPU \d+: .*\(UUID: (GPU-[0-9a-fA-F-]+)\)")
_LIST_MIG_RE = re.compile(r"^\s+MIG (\S+)\s+Device\s+\d+: \(UUID: (MIG-[0-9a-zA-Z/-]+)\)")


def short_model_name(name: str | bytes) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'H100-80GB-HBM3': a market name with no spaces."""
    if isinstance(name, bytes):  # older pynvml versions return bytes
        name = name.decode()
    name = name.strip().removeprefix("NVIDIA ")
    return "-".join(name.split())


def _cuda_version(code: int) -> str:
    """NVML's CUDA version number to text: 12080 -> '12.8', 13000 -> '13.0'."""
    return f"{code // 1000}.{code % 1000 // 10}"


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def mig_profile_of(name: str) -> str | None:
    """'NVIDIA H200 MIG 1g.18gb' (a MIG device's NVML name) -> '1g.18gb'."""
    found = re.search(r"MIG (\S+)$", name.strip())
    return found.group(1) if found and is_mig_profile(found.group(1)) else None


def _nvml_mig_instances(pynvml, handle) -> tuple[MigFacts, ...]:
    """The MIG instances of a GPU in MIG mode; () for a GPU without MIG or with it off."""
    try:
        current, _pending = pynvml.nvmlDeviceGetMigMode(handle)
    except pynvml.NVMLError:  # NOT_SUPPORTED: a GPU that has no MIG
        return ()
    if current != pynvml.NVML_DEVICE_MIG_ENABLE:
        return ()
    found = []
    for place in range(pynvml.nvmlDeviceGetMaxMigDeviceCount(handle)):
        try:
            mig = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, place)
        except pynvml.NVMLError:  # NOT_FOUND: no instance at this place
            continue
        profile = mig_profile_of(_text(pynvml.nvmlDeviceGetName(mig)))
        if profile:
            found.append(MigFacts(uuid=_text(pynvml.nvmlDeviceGetUUID(mig)), profile=profile,
                                  memory_mb=pynvml.nvmlDeviceGetMemoryInfo(mig).total // (1024 * 1024)))
    return tuple(found)


def discover_nvml() -> list[GpuFacts]:
    """The local GPUs as NVML sees them; [] where there is no NVML library or driver."""
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        # No libnvidia-ml or no driver loaded: a machine without GPUs, not an error.
        return []
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        cuda = _cuda_version(pynvml.nvmlSystemGetCudaDriverVersion_v2())
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            gpus.append(
                GpuFacts(
                    index=index,
                    uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),
                    model=short_model_name(pynvml.nvmlDeviceGetName(handle)),
                    memory_mb=pynvml.nvmlDeviceGetMemoryInfo(handle).total // (1024 * 1024),
                    driver_version=driver,
                    cuda_version=cuda,
                    simulated=False,
                    mig=_nvml_mig_instances(pynvml, handle),
                )
            )
        return gpus
    finally:
        pynvml.nvmlShutdown()


def parse_nvidia_smi(csv_text: str) -> list[GpuFacts]:
    """Parse the output of NVIDIA_SMI_QUERY: 'index, uuid, name, memory MiB, driver' a line."""
    gpus = []
    for line in csv_text.splitlines():
        if not line.strip():
            continue
        index, uuid, name, memory, driver = (field.strip() for field in line.split(","))
        gpus.append(
            GpuFacts(
                index=int(index),
                uuid=uuid,
                model=short_model_name(name),
                memory_mb=int(memory),
                driver_version=driver,
                # nvidia-smi's query has no field for it, so derive it from the driver.
                cuda_version=max_cuda_for_driver(driver),
                simulated=False,
            )
        )
    return gpus


def parse_mig_list(list_text: str) -> dict[str, tuple[MigFacts, ...]]:
    """Parse `nvidia-smi -L`: GPU UUID -> its MIG instances (only GPUs that have some)."""
    found: dict[str, list[MigFacts]] = {}
    gpu = None
    for line in list_text.splitlines():
        if match := _LIST_GPU_RE.match(line):
            gpu = match.group(1)
        elif (match := _LIST_MIG_RE.match(line)) and gpu and is_mig_profile(match.group(1)):
            profile = match.group(1)
            found.setdefault(gpu, []).append(MigFacts(uuid=match.group(2), profile=profile,
                                                      memory_mb=mig_memory_mb(profile)))
    return {uuid: tuple(migs) for uuid, migs in found.items()}


def parse_discovery(output: str) -> list[GpuFacts]:
    """The output of the discovery script: the query's lines, then `nvidia-smi -L`'s."""
    query, _, listing = output.partition(LIST_SEPARATOR)
    migs = parse_mig_list(listing)
    return [dataclasses.replace(g, mig=migs.get(g.uuid, ())) for g in parse_nvidia_smi(query)]


def discovery_script() -> list[str]:
    query = " ".join(NVIDIA_SMI_QUERY)
    # A driver too old for -L still reports its GPUs (as whole ones).
    return ["/bin/sh", "-c", f"{query} && {{ echo '{LIST_SEPARATOR}'; nvidia-smi -L || true; }}"]


def discover_with_container(client, image: str) -> list[GpuFacts]:
    """The GPUs of a (possibly remote) Docker engine, read by nvidia-smi in a throwaway
    container; [] where the engine has no NVIDIA runtime or GPUs."""
    import docker

    gpu_request = docker.types.DeviceRequest(count=-1, capabilities=[["gpu", "utility"]])
    try:
        output = client.containers.run(
            image, discovery_script(), device_requests=[gpu_request], remove=True
        )
    except (docker.errors.APIError, docker.errors.ContainerError):
        return []
    return parse_discovery(_text(output))
