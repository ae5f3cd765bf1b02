from dockyard.runtimes.base import ContainerSpec
from dockyard.runtimes.docker import device_requests


def spec(**overrides) -> ContainerSpec:
    values = dict(name="c", image="i", command=None, env={}, labels={}, hostname="h", network="n", volumes={})
    return ContainerSpec(**{**values, **overrides})


def test_real_gpus_are_requested_by_uuid_exactly():
    (request,) = device_requests(spec(gpu_uuids=["GPU-a", "GPU-b"], real_gpus=True))
    assert request["DeviceIDs"] == ["GPU-a", "GPU-b"]
    assert request["Capabilities"] == [["gpu"]]
    assert request.get("Count") in (None, 0)  # never "all"


def test_simulated_or_no_gpus_request_no_device():
    assert device_requests(spec(gpu_uuids=["GPU-a"], real_gpus=False)) is None
    assert device_requests(spec(gpu_uuids=[], real_gpus=True)) is None
