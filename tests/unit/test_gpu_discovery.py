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
    assert run["command"][:2] == ["/bin/sh", "-c"] and " ".join(gpu_discovery.NVIDIA_SMI_QUERY) in run["command"][2]
    assert run["remove"] is True
    assert run["device_requests"][0]["Capabilities"] == [["gpu", "utility"]]
    assert isinstance(run["device_requests"][0], docker.types.DeviceRequest)


def test_discover_with_container_no_nvidia_runtime():
    docker = pytest.importorskip("docker")
    error = docker.errors.APIError('could not select device driver "" with capabilities: [[gpu]]')
    assert gpu_discovery.discover_with_container(FakeClient(error), "img") == []


# `nvidia-smi -L` on an H100 in MIG mode with a 3g.40gb and two 1g.10gb instances.
H100_MIG_LIST = """GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-a124b911-d387-369b-16cd-b64e32940d21)
  MIG 3g.40gb     Device  0: (UUID: MIG-c6d4f1ef-42e4-5de3-91c7-45d71c87eb3f)
  MIG 1g.10gb     Device  1: (UUID: MIG-0a1b2c3d-42e4-5de3-91c7-45d71c87eb3f)
  MIG 1g.10gb     Device  2: (UUID: MIG-9f8e7d6c-42e4-5de3-91c7-45d71c87eb3f)
GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-bbbbbbbb-d387-369b-16cd-b64e32940d21)
"""


def test_parse_discovery_attaches_mig_instances_to_their_gpu():
    two = H100_SMI + H100_SMI.replace("0, GPU-a124b911", "1, GPU-bbbbbbbb")
    gpus = gpu_discovery.parse_discovery(two + gpu_discovery.LIST_SEPARATOR + "\n" + H100_MIG_LIST)
    assert [m.profile for m in gpus[0].mig] == ["3g.40gb", "1g.10gb", "1g.10gb"]
    assert gpus[0].mig[0].uuid == "MIG-c6d4f1ef-42e4-5de3-91c7-45d71c87eb3f"
    assert gpus[0].mig[1].memory_mb == 10 * 1024
    assert gpus[1].mig == ()  # not in MIG mode: rented whole


def test_parse_discovery_without_listing_has_whole_gpus():
    (gpu,) = gpu_discovery.parse_discovery(H100_SMI)
    assert gpu.mig == ()


@pytest.mark.parametrize("name, profile", [("NVIDIA H200 MIG 1g.18gb", "1g.18gb"),
                                           ("NVIDIA H100 80GB HBM3 MIG 1g.10gb+me", "1g.10gb+me"),
                                           ("NVIDIA H200", None)])
def test_mig_profile_of_nvml_names(name, profile):
    assert gpu_discovery.mig_profile_of(name) == profile


class FakeNvml:
    """pynvml's calls that MIG discovery makes, for one GPU in MIG mode with instances at
    places 0 and 2 (place 1 empty)."""

    NVML_DEVICE_MIG_ENABLE = 1

    class NVMLError(Exception):
        pass

    def __init__(self, mode=1):
        self.mode = mode

    def nvmlDeviceGetMigMode(self, handle):
        if self.mode is None:
            raise self.NVMLError("not supported")
        return self.mode, self.mode

    def nvmlDeviceGetMaxMigDeviceCount(self, handle):
        return 3

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle, place):
        if place == 1:
            raise self.NVMLError("not found")
        return place

    def nvmlDeviceGetName(self, mig):
        return b"NVIDIA H200 MIG 1g.18gb" if mig == 0 else "NVIDIA H200 MIG 3g.71gb"

    def nvmlDeviceGetUUID(self, mig):
        return f"MIG-{mig}"

    def nvmlDeviceGetMemoryInfo(self, mig):
        class Info:
            total = (16 if mig == 0 else 70) * 1024**3
        return Info()


def test_nvml_mig_instances():
    migs = gpu_discovery._nvml_mig_instances(FakeNvml(), "h")
    assert [(m.uuid, m.profile, m.memory_mb) for m in migs] == [("MIG-0", "1g.18gb", 16384), ("MIG-2", "3g.71gb", 71680)]
    assert gpu_discovery._nvml_mig_instances(FakeNvml(mode=0), "h") == ()
    assert gpu_discovery._nvml_mig_instances(FakeNvml(mode=None), "h") == ()
