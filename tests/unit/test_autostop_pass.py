"""The auto-stop pass (services/autostop.Stopper) on a real SQLite database, fed recorded
GPU series through its injectable source and driven by an injectable clock: the same code
the loop runs, without an engine (the driver only records what it was asked to do)."""

from datetime import datetime, timedelta, timezone

from sqlalchemy import select

from dockyard.config import Settings
from dockyard.core.metrics import DiskUsage, GpuSample, Sample
from dockyard.core.states import Status
from dockyard.db.billing_models import Notice
from dockyard.db.models import Image, Instance, InstanceEvent, Node, User
from dockyard.runtimes.base import Feature
from dockyard.runtimes.fake import FakeRuntime
from dockyard.services.autostop import Stopper
from dockyard.services.autostop import GIB
from dockyard.services.platform import open_platform

T0 = datetime(2026, 12, 2, 8, 0, tzinfo=timezone.utc)
# Recorded NVML utilisation of one GPU every 15 s: a job's last steps, then idle.
RECORDED = [97, 99, 98, 96, 100, 41, 3, 0, 0, 1, 0, 0, 0, 2, 0, 0] + [0] * 200


class Driver:
    def __init__(self):
        self.kicked = []

    def kick(self, instance_id):
        self.kicked.append(instance_id)


def platform_with(tmp_path, **instance):
    platform = open_platform(Settings(home=tmp_path, autostop_warn_minutes=10))
    with platform.sessions.begin() as db:
        db.add(Node(name="local", url="unix:///x", online=True))
        db.add(Image(id=1, name="debian-12", ref="dockyard/debian:bookworm"))
        db.add(User(id=1, name="ann", password_hash="x"))
    with platform.sessions.begin() as db:
        db.add(Instance(id="i1", owner_id=1, name="job", node_name="local", image_id=1, gpu_model="H200", gpu_count=1, gpu_milli=1000,
                        status=Status.RUNNING, backend_state={"container": "c1"}, data_disk_gb=1, started_at=T0, **instance))
    return platform


def series(values, start=T0):
    return [Sample(at=(start + timedelta(seconds=15 * k)).timestamp(), cpu_percent=None, memory_used=0,
                   memory_limit=0, gpus=(GpuSample(uuid="GPU-0", util_percent=u),)) for k, u in enumerate(values)]


def causes(platform):
    with platform.sessions.begin() as db:
        return list(db.scalars(select(InstanceEvent.cause).where(InstanceEvent.instance_id == "i1")
                               .order_by(InstanceEvent.id)))


def test_recorded_gpu_series_warn_then_stop_naming_the_rule(tmp_path):
    platform = platform_with(tmp_path, auto_stop_gpu_idle_minutes=30)
    recorded, now = series(RECORDED), [T0]
    seen = lambda _id: [s for s in recorded if s.at <= now[0].timestamp()]  # noqa: E731
    driver = Driver()
    stopper = Stopper(platform, driver, gpu_samples=seen, clock=lambda: now[0])
    last_busy = T0 + timedelta(seconds=15 * 5)  # the 41 % sample

    for minutes in range(0, 60):
        now[0] = T0 + timedelta(minutes=minutes)
        if stopper.run():
            break
    assert driver.kicked == ["i1"]
    # Warned 10 minutes before its 30 minutes were up, stopped when they were.
    assert now[0] == last_busy.replace(second=0) + timedelta(minutes=31)
    events = causes(platform)
    assert events[-2].startswith("auto-stop warning: every GPU under 5% for 30 min; it stops at 08:31:15 UTC")
    assert events[-1] == "auto-stop: every GPU under 5% for 30 min"
    with platform.sessions.begin() as db:
        assert db.get(Instance, "i1").status == Status.STOPPING
        kinds = [n.kind for n in db.scalars(select(Notice).order_by(Notice.id))]
    assert kinds == ["autostop_warning", "autostop"]


def test_no_gpu_readings_never_stop(tmp_path):
    platform = platform_with(tmp_path, auto_stop_gpu_idle_minutes=1)
    unread = [Sample(at=s.at, cpu_percent=None, memory_used=0, memory_limit=0,
                     gpus=(GpuSample(uuid="GPU-sim", util_percent=None),)) for s in series(RECORDED)]
    now = [T0]
    stopper = Stopper(platform, Driver(), gpu_samples=lambda _id: unread, clock=lambda: now[0])
    for minutes in range(0, 120, 5):
        now[0] = T0 + timedelta(minutes=minutes)
        assert stopper.run() == []
    assert not any(c.startswith("auto-stop") for c in causes(platform))


def test_a_lowered_operator_limit_holds_an_instance_without_a_policy(tmp_path):
    platform = platform_with(tmp_path)
    platform.settings.autostop_max_limit_minutes = 60
    now = [T0 + timedelta(minutes=50)]
    driver = Driver()
    stopper = Stopper(platform, driver, gpu_samples=lambda _id: [], clock=lambda: now[0])
    assert stopper.run() == []  # the warning, 10 minutes ahead
    now[0] = T0 + timedelta(minutes=60)
    assert stopper.run() == ["i1"]
    assert causes(platform)[-1] == "auto-stop: ran for 1 h, the policy's maximum runtime"


def engine(limits_system_disk: bool) -> FakeRuntime:
    runtime = FakeRuntime()
    if limits_system_disk:
        runtime.missing.pop(Feature.SYSTEM_DISK_LIMIT)
    return runtime


def test_a_system_disk_over_its_limit_stops_the_instance_where_the_engine_cannot_hold_it(tmp_path):
    platform = platform_with(tmp_path)
    platform.settings.system_disk_gb = 1
    written = {"i1": DiskUsage(at=T0.timestamp(), used=int(0.9 * GIB), total=GIB)}
    driver = Driver()
    stopper = Stopper(platform, driver, gpu_samples=lambda _id: [], clock=lambda: T0, system_disks=written.get)
    platform.runtimes["local"] = engine(limits_system_disk=False)
    assert stopper.run() == []  # under the limit
    written["i1"] = DiskUsage(at=T0.timestamp(), used=int(1.2 * GIB), total=GIB)
    platform.runtimes["local"] = engine(limits_system_disk=True)
    assert stopper.run() == []  # the engine refuses the writes itself: nothing to do
    platform.runtimes["local"] = engine(limits_system_disk=False)
    assert stopper.run() == ["i1"] and driver.kicked == ["i1"]
    assert causes(platform)[-1].startswith("its system disk holds 1.2 GB written, over the 1 GB limit")
    with platform.sessions.begin() as db:
        assert [n.kind for n in db.scalars(select(Notice))] == ["autostop"]
    platform.settings.system_disk_gb = 0  # no limit
    assert stopper._system_disks_over() == []
