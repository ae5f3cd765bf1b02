"""Simulated GPU declarations and driver/CUDA rules."""

import pytest

from dockyard.core.errors import InvalidInput
from dockyard.core.gpus import (
    DEFAULT_SIMULATED_DRIVER,
    GpuFacts,
    max_cuda_for_driver,
    memory_for_model,
    parse_simulated_gpus,
)


def test_two_models_give_six_gpus_with_consecutive_indexes():
    gpus = parse_simulated_gpus("A100-80GB:4,RTX-4090:2", "local")
    assert len(gpus) == 6
    assert [g.index for g in gpus] == [0, 1, 2, 3, 4, 5]
    assert [g.model for g in gpus] == ["A100-80GB"] * 4 + ["RTX-4090"] * 2
    assert all(isinstance(g, GpuFacts) for g in gpus)
    assert all(g.simulated is True for g in gpus)
    assert {g.driver_version for g in gpus} == {DEFAULT_SIMULATED_DRIVER}
    assert {g.cuda_version for g in gpus} == {max_cuda_for_driver(DEFAULT_SIMULATED_DRIVER)} == {"13.0"}
    assert [g.memory_mb for g in gpus] == [80 * 1024] * 4 + [24564] * 2
    assert len({g.uuid for g in gpus}) == 6
    assert all(g.uuid.startswith("GPU-") for g in gpus)


def test_uuids_stable_across_calls_and_different_per_node():
    first = parse_simulated_gpus("A100-80GB:4,RTX-4090:2", "local")
    again = parse_simulated_gpus("A100-80GB:4,RTX-4090:2", "local")
    other = parse_simulated_gpus("A100-80GB:4,RTX-4090:2", "gpu2")
    assert [g.uuid for g in first] == [g.uuid for g in again]
    assert first == again
    assert not {g.uuid for g in first} & {g.uuid for g in other}


def test_driver_suffix_sets_driver_and_cuda():
    gpus = parse_simulated_gpus("A100-80GB:4@550.54.15", "n1")
    assert len(gpus) == 4
    assert {g.driver_version for g in gpus} == {"550.54.15"}
    assert {g.cuda_version for g in gpus} == {"12.4"}


def test_a_driver_applies_to_the_whole_node():
    gpus = parse_simulated_gpus("H100:1@535.104.05, L4:2", "n1")
    assert [(g.model, g.driver_version, g.cuda_version) for g in gpus] == [
        ("H100", "535.104.05", "12.2"),
        ("L4", "535.104.05", "12.2"),
        ("L4", "535.104.05", "12.2"),
    ]


def test_two_drivers_on_one_node_are_refused():
    with pytest.raises(InvalidInput, match="one NVIDIA driver"):
        parse_simulated_gpus("H100:1@535.104.05,L4:2@550.54.15", "n1")


def test_count_defaults_to_one_and_blank_parts_are_skipped():
    gpus = parse_simulated_gpus(" T4 ,, ", "n1")
    assert [(g.index, g.model) for g in gpus] == [(0, "T4")]


def test_empty_spec_gives_no_gpus():
    assert parse_simulated_gpus("", "n1") == []


@pytest.mark.parametrize(
    "spec",
    [
        "A100:0",
        "A100:x",
        "A100:-1",
        "A100:",
        "A100:²",  # str.isdigit() is true for this, int() is not
        "bad name!:1",
        ":1",
        "A100/../x:1",
        "A100:1@abc",
        "A100:1@55.1",
        "A100:1@550",
        "A100:2,bad;name:1",
    ],
)
def test_bad_specs_raise_invalid_input(spec):
    with pytest.raises(InvalidInput) as err:
        parse_simulated_gpus(spec, "n1")
    assert err.value.status_code == 400
    assert "simulated GPUs" in err.value.message


@pytest.mark.parametrize(
    "driver, cuda",
    [
        ("525.60.13", "12.0"),
        ("530.30.02", "12.1"),
        ("550.54.15", "12.4"),
        ("555.42", "12.5"),
        ("565.57.01", "12.6"),
        ("570.86.10", "12.8"),
        ("575.51.03", "12.9"),
        ("580.95.05", "13.0"),
        ("590.1", "13.0"),
        ("520.61.05", "11.8"),
        ("470.82.01", "11.4"),
        ("450.80.02", "11.0"),
    ],
)
def test_max_cuda_for_driver(driver, cuda):
    assert max_cuda_for_driver(driver) == cuda


def test_max_cuda_never_decreases_with_driver_branch():
    versions = [tuple(int(p) for p in max_cuda_for_driver(f"{b}.1").split(".")) for b in range(400, 700)]
    assert versions == sorted(versions)


@pytest.mark.parametrize(
    "model, memory",
    [
        ("A100-80GB", 80 * 1024),
        ("A100-40gb", 40 * 1024),
        ("H100", 81559),
        ("H200", 143771),
        ("A100", 40960),
        ("A10", 23028),
        ("L40S", 46068),
        ("L4", 23034),
        ("rtx-4090", 24564),
        ("Mystery-GPU", 24 * 1024),
    ],
)
def test_memory_for_model(model, memory):
    assert memory_for_model(model) == memory
