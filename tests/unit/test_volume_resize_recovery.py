"""A volume left `resizing` by a server stopped in the middle of the resize is ready again
after the next reconcile, at the size its disk has; one being resized now is left alone."""

from dockyard.background.reconciler import reconcile_once
from dockyard.core.states import VolumeStatus
from dockyard.db.models import Volume, utcnow
from dockyard.services.volumes import RESIZE
from tests.unit import on_fake
from tests.unit.on_fake import ann

platform, driver, fake = on_fake.platform, on_fake.driver, on_fake.fake  # its fixtures


def _resizing(platform, fake, disk_gb: int) -> None:
    owner = ann(platform)
    fake.ensure_volume("dy-e1", platform.labels, size_gb=disk_gb)
    with platform.sessions.begin() as db:
        db.add(Volume(id="v1", owner_id=owner.id, name="scratch", node_name="local", size_gb=10, engine_name="dy-e1",
                      status=VolumeStatus.RESIZING))


def _volume(platform) -> Volume:
    with platform.sessions.begin() as db:
        found = db.get(Volume, "v1")
        db.expunge(found)
        return found


def test_an_interrupted_resize_is_ready_again_at_its_disk_s_size(platform, fake, driver):
    _resizing(platform, fake, disk_gb=20)  # the engine had grown it when the server stopped
    reconcile_once(platform, driver, utcnow())
    volume = _volume(platform)
    assert (volume.status, volume.size_gb) == ("ready", 20)
    assert "interrupted" in volume.status_reason and "20 GB" in volume.status_reason
    assert "dy-e1" in fake.volumes  # the data is where it was


def test_a_resize_in_progress_is_left_to_finish(platform, fake, driver):
    _resizing(platform, fake, disk_gb=10)
    op = platform.operations.start(RESIZE, "scratch", ann(platform), phase="resizing")
    reconcile_once(platform, driver, utcnow())
    assert _volume(platform).status == "resizing"
    op.finish()
    reconcile_once(platform, driver, utcnow())
    assert (_volume(platform).status, _volume(platform).size_gb) == ("ready", 10)
