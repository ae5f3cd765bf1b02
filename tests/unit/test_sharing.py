"""Sharing specs, shares, and how a container reaches a share (core/sharing.py)."""

from fractions import Fraction

import pytest

from dockyard.core.errors import InvalidInput
from dockyard.core.gpus import GpuFacts, MigFacts
from dockyard.core.sharing import (
    MIG, MPS, TIME_SLICING, SlotFacts, format_milli, gpu_access, mig_milli, parse_share, parse_sharing, slot_layout,
)
from dockyard.runtimes.base import ContainerSpec
from dockyard.runtimes.docker import device_requests, mps_daemon_config


@pytest.mark.parametrize("text, mode, parts, layout", [
    ("time-slicing:2", TIME_SLICING, 2, ()),
    ("mps:4", MPS, 4, ()),
    (" mps:10 ", MPS, 10, ()),
    ("mig", MIG, 1, ()),
    ("mig:1g.18gb*7", MIG, 1, ("1g.18gb",) * 7),
    ("mig:3g.71gb+2g.35gb+1g.18gb*2", MIG, 1, ("3g.71gb", "2g.35gb", "1g.18gb", "1g.18gb")),
    ("mig:1g.18gb+me+3g.71gb", MIG, 1, ("1g.18gb+me", "3g.71gb")),
])
def test_parse_sharing(text, mode, parts, layout):
    spec = parse_sharing(text)
    assert (spec.mode, spec.parts, spec.mig_layout) == (mode, parts, layout)
    assert parse_sharing(spec.text) == spec  # the normal form reads back the same


@pytest.mark.parametrize("text", [None, "", "none"])
def test_no_sharing(text):
    assert parse_sharing(text) is None


@pytest.mark.parametrize("text, says", [
    ("time-slicing", "number of parts"),
    ("mps:3", "one of 2, 4, 5, 8, 10"),
    ("mps:1", "number of parts"),
    ("vgpu:2", "the mode must be one of"),
    ("mig:2g", "is not a MIG profile"),
    ("mig:4g.71gb+4g.71gb", "8 compute slices"),
    ("mig:1g.18gb*9", "bad count"),
])
def test_bad_sharing_names_the_problem(text, says):
    with pytest.raises(InvalidInput) as err:
        parse_sharing(text)
    assert says in err.value.message and repr(text) in err.value.message


@pytest.mark.parametrize("text, label, fraction, milli", [
    ("0.5", "0.5", Fraction(1, 2), 500),
    ("0.25", "0.25", Fraction(1, 4), 250),
    (".50", "0.5", Fraction(1, 2), 500),
    ("1/4", "0.25", Fraction(1, 4), 250),
    ("0.125", "0.125", Fraction(1, 8), 125),
])
def test_parse_fraction_shares(text, label, fraction, milli):
    share = parse_share(text)
    assert (share.label, share.fraction, share.profile, share.milli) == (label, fraction, None, milli)


def test_parse_mig_share_is_billed_by_compute_slices():
    share = parse_share("1G.18GB")
    assert (share.label, share.profile, share.fraction) == ("1g.18gb", "1g.18gb", None)
    assert share.milli == 143  # 1 of 7 slices, rounded
    assert mig_milli("3g.71gb") == 429 and mig_milli("7g.141gb") == 1000


@pytest.mark.parametrize("text, says", [
    ("1", "less than one GPU"), ("1.5", "less than one GPU"), ("0", "more than 0"), ("0.0", "more than 0"),
    ("half", "is not a share"), ("-0.5", "is not a share"), ("0.3333", "whole thousandths"),
    ("1/0", "is not a share"), ("2g", "is not a share"),
])
def test_bad_shares_name_the_field(text, says):
    with pytest.raises(InvalidInput) as err:
        parse_share(text)
    assert err.value.field == "gpu_share" and says in err.value.message


def test_shares_on_split_gpus():
    half, quarter = parse_share("0.5"), parse_share("0.25")
    assert half.slots_on(2) == 1 and half.slots_on(4) == 2 and half.slots_on(10) == 5
    assert quarter.slots_on(4) == 1 and quarter.slots_on(2) is None and quarter.slots_on(5) is None
    assert parse_share("1g.18gb").slots_on(4) is None


def test_format_milli():
    assert [format_milli(m) for m in (10000, 2000, 1000, 500, 143)] == ["10", "2", "1", "0.5", "0.143"]


# ---------------------------------------------------------------- slot layouts

GPU = GpuFacts(index=0, uuid="GPU-1", model="H200", memory_mb=143771, driver_version="580.95.05",
               cuda_version="13.0", simulated=True)


def test_layouts():
    assert slot_layout(GPU, None) == (None, [SlotFacts(0)])
    assert slot_layout(GPU, parse_sharing("mps:4")) == (MPS, [SlotFacts(i) for i in range(4)])
    mode, slots = slot_layout(GPU, parse_sharing("mig:3g.71gb+1g.18gb"))
    assert mode == MIG and [(s.slot, s.profile, s.memory_mb) for s in slots] == [(0, "3g.71gb", 71 * 1024),
                                                                                  (1, "1g.18gb", 18 * 1024)]
    assert all(s.mig_uuid.startswith("MIG-") for s in slots) and len({s.mig_uuid for s in slots}) == 2
    assert slot_layout(GPU, parse_sharing("mig:3g.71gb+1g.18gb")) == (mode, slots)  # the same at every start


def test_real_gpus_under_mig_use_their_own_instances_and_others_stay_whole():
    real = GpuFacts(**{**GPU.__dict__, "simulated": False})
    assert slot_layout(real, parse_sharing("mig:1g.18gb*7")) == (None, [SlotFacts(0)])  # not in MIG mode
    in_mig = GpuFacts(**{**real.__dict__, "mig": (MigFacts("MIG-a", "2g.35gb", 35000),)})
    assert slot_layout(in_mig, parse_sharing("mig")) == (MIG, [SlotFacts(0, "MIG-a", "2g.35gb", 35000)])


# ---------------------------------------------------------------- access decisions


def test_whole_gpus_go_by_uuid_with_no_share_env():
    access = gpu_access(["GPU-a", "GPU-b"], None, 2000, MPS, [], 81920, real=True)
    assert access.device_ids == ("GPU-a", "GPU-b") and access.env == {} and access.mps_gpu is None


def test_mig_share_goes_by_its_mig_uuid():
    access = gpu_access(["GPU-a"], "1g.18gb", 143, MIG, ["MIG-x"], 143771, real=True)
    assert access.device_ids == ("MIG-x",) and access.mps_gpu is None
    assert access.env == {"DOCKYARD_GPU_SHARE": "1g.18gb"}
    (request,) = device_requests(ContainerSpec(name="c", image="i", command=None, env={}, labels={}, hostname="h",
                                               network="n", volumes={}, gpu_uuids=list(access.device_ids),
                                               real_gpus=True))
    assert request["DeviceIDs"] == ["MIG-x"]


def test_mps_share_on_a_real_gpu_pins_its_memory_and_joins_the_daemon():
    access = gpu_access(["GPU-a"], "0.25", 250, MPS, [], 81920, real=True)
    assert access.device_ids == ("GPU-a",) and access.mps_gpu == "GPU-a"
    assert access.env == {
        "DOCKYARD_GPU_SHARE": "0.25", "DOCKYARD_GPU_MEMORY_MB": "20480",
        "CUDA_MPS_PIPE_DIRECTORY": "/tmp/nvidia-mps",
        "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT": "0=20480M",  # the GPU is device 0 in its container
        "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "25",
    }


def test_time_slicing_and_simulated_shares_only_say_their_part():
    plain = gpu_access(["GPU-a"], "0.5", 500, TIME_SLICING, [], 24576, real=True)
    simulated = gpu_access(["GPU-a"], "0.5", 500, MPS, [], 24576, real=False)
    for access in (plain, simulated):
        assert access.mps_gpu is None and access.device_ids == ("GPU-a",)
        assert access.env == {"DOCKYARD_GPU_SHARE": "0.5", "DOCKYARD_GPU_MEMORY_MB": "12288"}


def test_mps_daemon_container():
    config = mps_daemon_config("dy-x-mps-1", "GPU-1", "probe", "dy-x-mps-1", {"dockyard.deployment": "x"})
    assert config["command"] == ["nvidia-cuda-mps-control", "-f"]
    (request,) = config["device_requests"]
    assert request["DeviceIDs"] == ["GPU-1"] and request["Capabilities"] == [["gpu", "compute", "utility"]]
    assert config["environment"]["CUDA_MPS_PIPE_DIRECTORY"] == "/tmp/nvidia-mps"
    assert config["volumes"] == {"dy-x-mps-1": {"bind": "/tmp/nvidia-mps", "mode": "rw"}}
    assert config["ipc_mode"] == "shareable" and config["network_mode"] == "none"
    assert config["labels"] == {"dockyard.deployment": "x", "dockyard.mps": "GPU-1"}


# ---------------------------------------------------------------- the driver's container spec


def _platform_and_rows(gpu_sharing, share, milli, slots):
    from types import SimpleNamespace

    from dockyard.config import Settings

    platform = SimpleNamespace(settings=Settings(), labels={"dockyard.deployment": "t"}, deployment="t",
                               secret_box=SimpleNamespace(open=lambda sealed: {}))
    instance = SimpleNamespace(id="i1", name="n", env={}, secret_env=None, jupyter_token="tok", ssh_password=None,
                               ssh_port=None,
                               command=None, owner_id=1, gpu_share=share, gpu_milli=milli)
    gpu = SimpleNamespace(uuid="GPU-1", sharing=gpu_sharing, memory_mb=81920, simulated=False, index=0)
    node = SimpleNamespace(cpus=16, cpus_per_gpu=8.0, memory_per_gpu_bytes=64 * 2**30)
    return platform, instance, node, [gpu], slots


def test_spec_of_an_mps_share_joins_its_gpus_daemon():
    from types import SimpleNamespace

    from dockyard.background.driver.spec import access_for, container_spec

    platform, instance, node, gpus, slots = _platform_and_rows(MPS, "0.5", 500, [SimpleNamespace(mig_uuid=None)])
    access = access_for(instance, gpus, slots)
    spec = container_spec(platform, instance, node, gpus, access, "img", "net", {})
    daemon = "dy-t-mps-1"
    assert spec.gpu_uuids == ["GPU-1"] and spec.real_gpus
    assert spec.ipc_mode == f"container:{daemon}" and spec.volumes[daemon] == "/tmp/nvidia-mps"
    assert spec.env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] == "0=40960M"
    assert spec.nano_cpus == 4 * 10**9 and spec.memory_bytes == 32 * 2**30  # half the GPU's host share


def test_spec_of_a_mig_share_names_its_instance():
    from types import SimpleNamespace

    from dockyard.background.driver.spec import access_for, container_spec

    platform, instance, node, gpus, slots = _platform_and_rows(MIG, "1g.18gb", 143, [SimpleNamespace(mig_uuid="MIG-9")])
    spec = container_spec(platform, instance, node, gpus, access_for(instance, gpus, slots), "img", "net", {})
    assert spec.gpu_uuids == ["MIG-9"] and spec.ipc_mode is None and spec.labels["dockyard.gpus"] == "MIG-9"
    assert "NVIDIA_VISIBLE_DEVICES" not in spec.env  # real: the device request gives it
