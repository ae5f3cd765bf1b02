import shutil

import pytest

from dockyard.core.gpus import GpuFacts
from dockyard.runtimes import gpu_discovery
from dockyard.runtimes.gpu_discovery import discover_nvml, parse_nvidia_smi, short_model_name

# Real output of NVIDIA_SMI_QUERY on a one-H100 machine, 2026-11-26 (see docs/gpu-check.md).
H100_SMI = "0, GPU-a124b911-d387-369b-16cd-b64e32940d21, NVIDIA H100 80GB HBM3, 81559, 580.159.04\n"


@pytest.mark.parametrize(
    "name, short",
    [
        ("NVIDIA H100 80GB HBM3", "H100-80GB-HBM3"),
        (b"NVIDIA A100-SXM4-80GB", "A100-SXM4-80GB"),
        ("NVIDIA GeForce RTX 4090", "GeForce-RTX-4090"),
        ("Tesla T4", "Tesla-T4"),
        ("  NVIDIA  RTX A6000 ", "RTX-A6000"),
    ],
)
def test_short_model_name(name, short):
    assert short_model_name(name) == short


def test_parse_nvidia_smi_real_h100_output():
    (gpu,) = parse_nvidia_smi(H100_SMI)
    assert gpu == GpuFacts(
        index=0,
        uuid=H100_SMI.split(", ")[1],
        model="H100-80GB-HBM3",
        memory_mb=81559,
        driver_version="580.159.04",
        cuda_version="13.0",
        simulated=False,
    )


def test_parse_nvidia_smi_several_gpus_and_blank_lines():
    text = "0, GPU-a, NVIDIA L4, 23034, 550.54.15\n\n1, GPU-b, Tesla T4, 15360, 550.54.15\n"
    gpus = parse_nvidia_smi(text)
    assert [(g.index, g.uuid, g.model, g.cuda_version) for g in gpus] == [
        (0, "GPU-a", "L4", "12.4"),
        (1, "GPU-b", "Tesla-T4", "12.4"),
    ]
    assert parse_nvidia_smi("") == []


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has a GPU")
def test_discover_nvml_without_gpu_is_empty():
    assert discover_nvml() == []


def test_discover_nvml_reads_nvml(monkeypatch):
    """With NVML faked: values converted, and nvmlShutdown called after init."""
    pynvml = pytest.importorskip("pynvml")
    calls = []

    class Memory:
        total = 81559 * 1024 * 1024

    fakes = {
        "nvmlInit": lambda: calls.append("init"),
        "nvmlShutdown": lambda: calls.append("shutdown"),
        "nvmlSystemGetDriverVersion": lambda: "580.159.04",
        "nvmlSystemGetCudaDriverVersion_v2": lambda: 12080,
        "nvmlDeviceGetCount": lambda: 1,
        "nvmlDeviceGetHandleByIndex": lambda i: i,
        "nvmlDeviceGetUUID": lambda h: b"GPU-1234",
        "nvmlDeviceGetName": lambda h: b"NVIDIA H100 80GB HBM3",
        "nvmlDeviceGetMemoryInfo": lambda h: Memory(),
    }
    for name, fake in fakes.items():
        monkeypatch.setattr(pynvml, name, fake)
    assert discover_nvml() == [
        GpuFacts(0, "GPU-1234", "H100-80GB-HBM3", 81559, "580.159.04", "12.8", False)
    ]
    assert calls == ["init", "shutdown"]


def test_discover_nvml_driver_not_loaded(monkeypatch):
    pynvml = pytest.importorskip("pynvml")

    def fail():
        raise pynvml.NVMLError(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)

    monkeypatch.setattr(pynvml, "nvmlInit", fail)
    monkeypatch.setattr(pynvml, "nvmlShutdown", lambda: pytest.fail("shutdown without init"))
    assert discover_nvml() == []


def test_cuda_version_text():
    assert gpu_discovery._cuda_version(12080) == "12.8"
    assert gpu_discovery._cuda_version(13000) == "13.0"
    assert gpu_discovery._cuda_version(11040) == "11.4"


class FakeContainers:
    def __init__(self, result):
        self.result = result
        self.kwargs = None

    def run(self, image, command, **kwargs):
        self.kwargs = dict(kwargs, image=image, command=command)
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


class FakeClient:
    def __init__(self, result):
        self.containers = FakeContainers(result)


def test_discover_with_container_parses_output():
    docker = pytest.importorskip("docker")
    client = FakeClient(H100_SMI.encode())
    (gpu,) = gpu_discovery.discover_with_container(client, "nvidia/cuda:13.0.0-base-ubuntu24.04")
    assert gpu.model == "H100-80GB-HBM3"
    run = client.containers.kwargs
    assert run["command"][0] == "nvidia-smi" and run["remove"] is True
    assert run["device_requests"][0]["Capabilities"] == [["gpu", "utility"]]
    assert isinstance(run["device_requests"][0], docker.types.DeviceRequest)


def test_discover_with_container_no_nvidia_runtime():
    docker = pytest.importorskip("docker")
    error = docker.errors.APIError('could not select device driver "" with capabilities: [[gpu]]')
    assert gpu_discovery.discover_with_container(FakeClient(error), "img") == []
