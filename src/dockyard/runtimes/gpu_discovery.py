"""Find the real GPUs of a node: through NVML locally, or nvidia-smi in a container remotely.

Imports only the stdlib and dockyard.core at load time, so it works on GPU-less machines
and where the docker package is missing; pynvml and docker are imported when used.
"""

from __future__ import annotations

from dockyard.core.gpus import GpuFacts, max_cuda_for_driver

# The query discover_with_container runs; parse_nvidia_smi reads its output.
NVIDIA_SMI_QUERY = [
    "nvidia-smi",
    "--query-gpu=index,uuid,name,memory.total,driver_version",
    "--format=csv,noheader,nounits",
]


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


def discover_with_container(client, image: str) -> list[GpuFacts]:
    """The GPUs of a (possibly remote) Docker engine, read by nvidia-smi in a throwaway
    container; [] where the engine has no NVIDIA runtime or GPUs."""
    import docker

    gpu_request = docker.types.DeviceRequest(count=-1, capabilities=[["gpu", "utility"]])
    try:
        output = client.containers.run(
            image, NVIDIA_SMI_QUERY, device_requests=[gpu_request], remove=True
        )
    except (docker.errors.APIError, docker.errors.ContainerError):
        return []
    return parse_nvidia_smi(_text(output))
