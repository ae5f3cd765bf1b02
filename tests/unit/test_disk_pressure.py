"""System disks measured at once when a node's container storage fills fast, on nodes
whose engine cannot hold them to their size: the measured limit does not wait
`metrics_disk_interval_s` (five minutes) to catch a tenant filling the node."""

from __future__ import annotations

from concurrent.futures import Executor, Future

import pytest

from dockyard.background.metrics import MetricsSampler
from dockyard.background.workers import Workers
from dockyard.runtimes.base import Feature
from dockyard.services import images as image_service
from tests.unit.on_fake import create, open_fake, settle

GIB = 1024**3


class AtOnce(Executor):
    """Runs what it is given on the caller's thread: a round ends with its readings."""

    def submit(self, fn, *args, **kwargs):
        done = Future()
        done.set_result(fn(*args, **kwargs))
        return done


@pytest.fixture
def setup(tmp_path):
    platform = open_fake(tmp_path, metrics_disk_interval_s=3600, disk_pressure_drop_gb=1)
    image_service.refresh_cache(platform)
    owner = Workers(platform, drain_s=5)
    instance_id = create(platform, owner.driver)
    settle(platform, instance_id, "running")
    fake = platform.runtimes["local"]
    fake.free_bytes = 100 * GIB
    sampler = MetricsSampler(platform, AtOnce(), AtOnce())
    sampler.sample_once()  # the first reading, at once as ever
    yield platform, fake, sampler, instance_id
    owner.stop()


def write(fake, instance_id: str, size: int) -> None:
    container = next(c for c in fake.containers.values() if c.spec.labels.get("dockyard.instance") == instance_id)
    container.files["/root/big"] = (b"x" * size, 0o644)


def test_a_drop_in_free_space_measures_the_system_disks_at_once(setup):
    platform, fake, sampler, instance_id = setup
    first = sampler.store.read_system_disk(instance_id)
    assert first is not None
    write(fake, instance_id, 5000)
    fake.free_bytes -= GIB // 2  # less than the drop that counts: it waits its turn
    sampler.sample_once()
    assert sampler.store.read_system_disk(instance_id) == first
    fake.free_bytes -= GIB // 2  # 1 GiB in all since it was compared
    sampler.sample_once()
    assert sampler.store.read_system_disk(instance_id).used == first.used + 5000
    write(fake, instance_id, 9000)
    sampler.sample_once()  # no further drop: the next reading waits again
    assert sampler.store.read_system_disk(instance_id).used == first.used + 5000


def test_space_freed_then_filled_again_counts_from_the_new_level(setup):
    platform, fake, sampler, instance_id = setup
    first = sampler.store.read_system_disk(instance_id)
    fake.free_bytes += 10 * GIB  # something was deleted
    sampler.sample_once()
    write(fake, instance_id, 7000)
    fake.free_bytes -= GIB
    sampler.sample_once()
    assert sampler.store.read_system_disk(instance_id).used == first.used + 7000


@pytest.mark.parametrize("why", ["the engine holds the limit", "no reading"])
def test_nothing_is_measured_early_where_it_is_not_needed_or_cannot_be_seen(setup, why):
    platform, fake, sampler, instance_id = setup
    first = sampler.store.read_system_disk(instance_id)
    if why == "the engine holds the limit":
        del fake.missing[Feature.SYSTEM_DISK_LIMIT]
        fake.free_bytes -= 5 * GIB
    else:
        fake.free_bytes = None  # its free space cannot be read
    write(fake, instance_id, 3000)
    sampler.sample_once()
    assert sampler.store.read_system_disk(instance_id) == first


class Held(Executor):
    """Keeps what it is given until `run_all`: a reading still under way."""

    def __init__(self):
        self.held = []

    def submit(self, fn, *args, **kwargs):
        self.held.append((fn, args, kwargs))
        return Future()

    def run_all(self):
        held, self.held = self.held, []
        for fn, args, kwargs in held:
            fn(*args, **kwargs)


def test_a_drop_during_a_reading_has_it_read_again_when_it_ends(setup):
    platform, fake, _, instance_id = setup
    disks = Held()
    sampler = MetricsSampler(platform, AtOnce(), disks)
    sampler.sample_once()
    disks.run_all()  # the first reading
    first = sampler.store.read_system_disk(instance_id)
    sampler._disk_due[instance_id] = 0.0  # its turn: a reading starts, and is still under way...
    sampler.sample_once()
    assert len(disks.held) == 1
    fake.free_bytes -= 2 * GIB  # ...when the node fills
    sampler.sample_once()
    disks.run_all()  # it read before the writes
    write(fake, instance_id, 4000)
    sampler.sample_once()  # so it reads again at once
    disks.run_all()
    assert sampler.store.read_system_disk(instance_id).used == first.used + 4000
