"""dockyard-shutdown's service (services/inside.py) on a real SQLite database: a token
stops only the instance holding it, a new start's token replaces the old, and what is not
running answers 409. The files are those the driver uploads at each start."""

import hashlib

import pytest
from sqlalchemy import select

from dockyard.core.errors import Conflict, Unauthorized
from dockyard.core.states import Status
from dockyard.db.billing_models import Notice
from dockyard.db.models import Instance, InstanceEvent
from dockyard.services import inside
from tests.unit.test_autostop_pass import platform_with


class Runtime:
    """Keeps what each start wrote, as the driver uploads it (paths under /)."""

    def __init__(self):
        self.files = {}

    def start(self, platform, instance_id):
        with platform.sessions.begin() as db:
            files, dirs = inside.start_files(platform, db, instance_id)
        assert set(dirs) == {"etc/dockyard", "usr/local/bin"}
        self.files = {f"/{path}": (content.decode(), mode) for path, (content, mode) in files.items()}


def token_of(runtime) -> str:
    content, mode = runtime.files["/etc/dockyard/shutdown"]
    assert mode == 0o600
    return content.splitlines()[1]


def test_a_token_stops_its_own_running_instance_once(tmp_path):
    platform = platform_with(tmp_path)
    runtime = Runtime()
    runtime.start(platform, "i1")
    assert runtime.files["/etc/dockyard/shutdown"][0].startswith("http://GATEWAY:8001\n")
    assert runtime.files["/usr/local/bin/dockyard-shutdown"][1] == 0o755
    token = token_of(runtime)
    with platform.sessions.begin() as db:  # only the digest is kept
        assert db.get(Instance, "i1").shutdown_token_hash == hashlib.sha256(token.encode()).hexdigest()

    instance, stopped = inside.stop_from_inside(platform, token)
    assert (instance.id, stopped) == ("i1", True)
    with platform.sessions.begin() as db:
        assert db.get(Instance, "i1").status == Status.STOPPING
        assert inside.CAUSE in db.scalars(select(InstanceEvent.cause)).all()
        assert db.scalars(select(Notice.kind)).all() == [inside.NOTICE_KIND]
    assert inside.stop_from_inside(platform, token)[1] is False  # already stopping: nothing twice
    with platform.sessions.begin() as db:
        db.get(Instance, "i1").status = Status.STOPPED
    with pytest.raises(Conflict, match="is stopped, not running"):
        inside.stop_from_inside(platform, token)


def test_unknown_empty_and_replaced_tokens_are_refused(tmp_path):
    platform = platform_with(tmp_path)
    runtime = Runtime()
    for token in ("", "nope"):
        with pytest.raises(Unauthorized):
            inside.stop_from_inside(platform, token)
    runtime.start(platform, "i1")
    old = token_of(runtime)
    runtime.start(platform, "i1")  # the next start
    with pytest.raises(Unauthorized):
        inside.stop_from_inside(platform, old)
    assert inside.stop_from_inside(platform, token_of(runtime))[1] is True


def test_an_operator_address_is_written_for_other_nodes(tmp_path):
    platform = platform_with(tmp_path)
    platform.settings.inside_url = "http://dockyard.example:8001"
    runtime = Runtime()
    runtime.start(platform, "i1")
    assert runtime.files["/etc/dockyard/shutdown"][0].startswith("http://dockyard.example:8001\n")
