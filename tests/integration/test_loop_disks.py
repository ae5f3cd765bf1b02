"""Disks of a fixed size on real loop devices, and the spare kept made ahead."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from dockyard.runtimes.disks import GIB, SPARE_PREFIX, LoopDisks, unavailable_reason

ENGINE = "unix:///var/run/docker.sock"
pytestmark = pytest.mark.skipif(unavailable_reason(ENGINE) is not None, reason=str(unavailable_reason(ENGINE)))


def _spares(root, size_gb):
    return sorted(p.name for p in root.glob(f"{SPARE_PREFIX}{size_gb}g-*.img"))


def _wait_for_spare(root, size_gb, other_than=()):
    deadline = time.monotonic() + 60
    while not (found := [s for s in _spares(root, size_gb) if s not in other_than]):
        assert time.monotonic() < deadline, "no spare disk was made"
        time.sleep(0.1)
    return found


@pytest.fixture
def disks(tmp_path):
    made = []

    def make(**options) -> LoopDisks:
        made.append(LoopDisks(tmp_path / "disks", ENGINE, **options))
        return made[-1]

    yield make
    for loop_disks in made:
        for image in (tmp_path / "disks").glob("*.img"):
            loop_disks.remove(image.stem)


def test_a_new_disk_of_the_usual_size_is_the_spare_and_another_is_made(disks, tmp_path):
    root = tmp_path / "disks"
    root.mkdir()
    (root / f"{SPARE_PREFIX}2g-halfmade.new").write_bytes(b"x")  # a crash's leftover
    loop_disks = disks(spare_size_gb=2)
    assert not (root / f"{SPARE_PREFIX}2g-halfmade.new").exists()
    first = _wait_for_spare(root, 2)
    point = loop_disks.ensure("data-a", 2)
    assert _spares(root, 2) != first  # taken, and a new one is on its way
    assert os.path.ismount(point) and os.listdir(point) == []  # an empty file system, no lost+found
    size, used = loop_disks.usage("data-a")
    assert 2 * GIB <= size < 2.1 * GIB and used < 0.1 * GIB
    (point / "kept").write_text("mine")
    _wait_for_spare(root, 2, other_than=first)
    # Another size is made in place; the spare waits for a disk of its size.
    spare = _spares(root, 2)
    other = loop_disks.ensure("data-b", 3)
    assert 3 * GIB <= loop_disks.usage("data-b")[0] < 3.1 * GIB and _spares(root, 2) == spare
    assert (point / "kept").read_text() == "mine" and os.listdir(other) == []


def test_without_a_usual_size_no_spare_is_made(disks, tmp_path):
    loop_disks = disks()
    loop_disks.ensure("plain", 1)
    time.sleep(0.5)
    assert list((tmp_path / "disks").glob(f"{SPARE_PREFIX}*")) == []


def test_a_disk_made_of_the_spare_is_mounted_already_and_again_after_a_reboot(disks, tmp_path):
    root = tmp_path / "disks"
    loop_disks = disks(spare_size_gb=2)
    spare = _wait_for_spare(root, 2)[0]
    spare_point = root / spare.removesuffix(".img")
    assert os.path.ismount(spare_point)  # mounted before anyone can take it
    point = loop_disks.ensure("data-a", 2)
    assert point == spare_point == loop_disks.mountpoint("data-a") and (root / "data-a").resolve() == point
    (point / "kept").write_text("mine")
    subprocess.run(["umount", str(point)], check=True)  # as a reboot leaves it
    again = disks().ensure("data-a", 2)
    assert os.path.ismount(again) and (again / "kept").read_text() == "mine"
    loop_disks.remove("data-a")
    assert not any(p.name.startswith("data-a") for p in root.iterdir()) and not spare_point.exists()


def test_a_spare_a_crash_left_mounted_half_made_is_unmounted_and_removed(disks, tmp_path):
    root = tmp_path / "disks"
    root.mkdir()
    partial, point = root / f"{SPARE_PREFIX}2g-halfmade.new", root / f"{SPARE_PREFIX}2g-halfmade"
    with open(partial, "wb") as f:
        f.truncate(GIB)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(partial)], check=True)
    point.mkdir()
    subprocess.run(["mount", "-o", "loop", str(partial), str(point)], check=True)
    disks()
    assert not partial.exists() and not point.exists()


def test_removing_a_disk_whose_take_a_crash_cut_short_leaves_the_spares_new_owner_alone(disks, tmp_path):
    root = tmp_path / "disks"
    loop_disks = disks(spare_size_gb=2)
    spare = _wait_for_spare(root, 2)[0].removesuffix(".img")
    (root / "cut-short").symlink_to(spare)  # linked, then the crash: the image was never renamed
    point = loop_disks.ensure("owner", 2, refill=False)  # takes that same spare
    (point / "kept").write_text("mine")
    loop_disks.remove("cut-short")
    assert not (root / "cut-short").is_symlink()
    assert os.path.ismount(point) and (point / "kept").read_text() == "mine"
