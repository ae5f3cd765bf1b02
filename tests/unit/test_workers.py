"""background/workers.py: one owner starts every loop and stops it, then drains every
pool in order, waiting for what still runs up to its bound."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from dockyard.background import workers as workers_module
from dockyard.background.workers import Workers
from dockyard.config import Settings


class FakeLoop:
    """Records what the owner does to it; its last pass hands work to the driver's pool
    while it is being joined, as a real loop's pass in progress may."""

    def __init__(self, log: list[str], name: str, owner=None):
        self.log, self.name, self.owner = log, name, owner
        self.stops = 0
        self.handed = None

    def start(self) -> None:
        self.log.append(f"start {self.name}")

    def stop(self) -> None:
        self.stops += 1
        self.log.append(f"stop {self.name}")

    def join(self, timeout: float | None = None) -> None:
        self.log.append(f"join {self.name}")
        if self.owner is not None:
            self.handed = self.owner.pools.drive.submit(lambda: "handed out at the end")


def _platform(**settings):
    return SimpleNamespace(settings=Settings(inside_port=0, **settings), generation=0, labels={}, deployment="t",
                           gpus_freed=threading.Event())


def _workers(drain_s: float = 5.0, **settings) -> tuple[Workers, list[str]]:
    owner = Workers(_platform(**settings), drain_s=drain_s)
    log: list[str] = []
    owner.loops = [FakeLoop(log, "a", owner), FakeLoop(log, "b")]
    return owner, log


def test_it_builds_every_loop_and_hands_its_pools_to_the_platform():
    owner = Workers(_platform())
    names = {type(loop).__name__ for loop in owner.loops}
    assert names == {"Reconciler", "NodeWatch", "Metering", "ActivityWatch", "MetricsSampler", "AutoStop",
                     "Dispatcher", "AutoRelease"}
    assert owner.platform.pools is owner.pools and owner.metrics in owner.loops
    assert {pool.name for pool in owner.pool_order} == {"clone", "prepare", "drive", "migrate-io", "check", "metrics",
                                                         "metrics-disk"}
    assert owner.stop() == []  # never started: nothing to wait for


def test_start_starts_every_loop_and_stop_stops_them_before_the_pools_drain():
    owner, log = _workers()
    owner.start()
    assert log == ["start a", "start b"]
    assert owner.stop() == []
    assert log[2:] == ["stop a", "stop b", "join a", "join b"]
    # The pools were still open while the loops ended: their last work ran.
    assert owner.loops[0].handed.result(timeout=1) == "handed out at the end"
    with pytest.raises(RuntimeError):  # and closed after
        owner.pools.drive.submit(print)


def test_a_task_still_running_at_stop_is_waited_for():
    owner, _ = _workers(drain_s=5.0)
    owner.start()
    done = threading.Event()
    owner.pools.copies.submit(lambda: (time.sleep(0.3), done.set()))
    time.sleep(0.05)  # running, not queued
    assert owner.stop() == []
    assert done.is_set()


def test_a_task_past_its_bound_is_left_running_and_named():
    owner, _ = _workers(drain_s=0.5)
    owner.start()
    release = threading.Event()
    future = owner.pools.prepares.submit(release.wait, 10)
    began = time.monotonic()
    try:
        assert owner.stop() == ["prepare"]
        assert 0.4 <= time.monotonic() - began < 9  # waited its bound, not for the task (10 s)
        assert not future.done()
    finally:
        release.set()
    assert future.result(timeout=5) is True


def test_queued_drives_are_cancelled_but_queued_copies_run(monkeypatch):
    monkeypatch.setattr(workers_module, "COPY_THREADS", 1)
    owner, _ = _workers(drain_s=5.0, workers=1)
    owner.start()
    gate = threading.Event()
    owner.pools.drive.submit(gate.wait, 5)
    queued_drive = owner.pools.drive.submit(lambda: "driven")
    owner.pools.copies.submit(gate.wait, 5)
    queued_copy = owner.pools.copies.submit(lambda: "copied")
    threading.Timer(0.3, gate.set).start()
    assert owner.stop() == []
    assert queued_drive.cancelled()  # the reconciler drives it again at the next start
    assert queued_copy.result(timeout=0) == "copied"  # a copy holds its instance: nothing else would finish it


def test_stop_is_idempotent():
    owner, log = _workers()
    owner.start()
    assert owner.stop() == []
    assert owner.stop() == []
    assert [loop.stops for loop in owner.loops] == [1, 1]
    assert log.count("join a") == 1
