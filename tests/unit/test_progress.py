"""Progress of long operations: the percentages read from build and pull output, and the
in-memory registry the console and the API answer from (who sees what, what changed)."""

import time

import pytest

from dockyard.core.errors import NotFound
from dockyard.core.progress import PullProgress, percent_of, with_percent
from dockyard.db.models import User
from dockyard.services import operations
from dockyard.services.operations import Operations


def test_a_build_step_counts_the_steps_before_it_as_done():
    assert percent_of("Step 1/4 : FROM debian") == 0
    assert percent_of("Step 3/4 : RUN make") == 50
    assert percent_of(" ---> Using cache") is None
    assert percent_of("RUN Step 3/4 later in a line") is None


def test_a_pull_sums_bytes_over_the_layers_known_so_far():
    pull = PullProgress()
    assert pull.feed({"status": "Pulling from library/debian", "id": "bookworm"}) is None
    assert pull.feed({"status": "Pulling fs layer", "id": "a"}) is None
    assert pull.feed({"status": "Downloading", "id": "a", "progressDetail": {"current": 25, "total": 100}}) == 25
    assert pull.feed({"status": "Downloading", "id": "b", "progressDetail": {"current": 0, "total": 300}}) == 6.25
    assert pull.feed({"status": "Download complete", "id": "a"}) == 25
    assert pull.feed({"status": "Downloading", "id": "b", "progressDetail": {"current": 150, "total": 300}}) == 62.5
    assert pull.feed({"status": "Pull complete", "id": "b"}) == 100
    assert pull.feed({"status": "Already exists", "id": "c"}) == 100


def test_the_percentage_travels_in_the_line_text():
    line = with_percent("a Downloading [=>   ] 1MB/4MB", 37.4)
    assert line.endswith(" · 37%") and percent_of(line) == 37
    assert percent_of("image 50% done") is None


def users():
    return User(id=1, name="alice", is_admin=False), User(id=2, name="bob", is_admin=False), \
        User(id=3, name="ops", is_admin=True)


def test_operations_are_seen_by_their_owner_and_image_work_by_every_admin():
    alice, bob, ops = users()
    registry = Operations()
    save = registry.start("save", "alice/env:v1", alice, phase="committing the system disk")
    pull = registry.start("pull", "debian-12", ops, admins=True)
    assert registry.listed(alice) == [save] and registry.listed(bob) == []
    assert registry.listed(ops) == [pull]
    assert registry.listed(User(id=4, name="root", is_admin=True)) == [pull]
    assert registry.get(alice, save.id) is save
    for who, op in ((bob, save), (ops, save), (bob, pull), (alice, "nope")):
        with pytest.raises(NotFound):
            registry.get(who, getattr(op, "id", op))


def test_updates_move_the_bar_and_changes_report_only_what_moved():
    alice, bob, _ = users()
    registry = Operations()
    version, first = registry.changes(alice, None)
    assert first == []
    build = registry.start("build", "pytorch", alice)
    other = registry.start("save", "x", bob)
    build.update(line="Step 2/5 : RUN x")
    assert build.view()["percent"] == 20 and build.view()["lines"] == ["Step 2/5 : RUN x"]
    build.update(line=" ---> Running in 1234")  # no percentage: the bar stays
    assert build.view()["percent"] == 20
    version, changed = registry.changes(alice, version)
    assert [c["id"] for c in changed] == [build.id]
    assert registry.changes(alice, version) == (version, [])
    other.update("copying", 50)
    assert registry.changes(alice, version)[1] == []
    build.finish()
    _, changed = registry.changes(alice, version)
    assert changed[0]["done"] and changed[0]["percent"] == 100 and changed[0]["phase"] == "done"
    for _ in range(30):
        build.update(line="x")
    assert len(build.view()["lines"]) == operations.LOG_LINES


def test_a_failure_keeps_its_place_and_old_ends_are_forgotten(monkeypatch):
    alice, _, _ = users()
    registry = Operations()
    op = registry.start("clone", "copy", alice, instance_id="abc")
    op.update("copying the data disk", 30)
    op.finish(error="disk full")
    view = op.view()
    assert (view["error"], view["percent"], view["phase"], view["instance_id"]) == ("disk full", 30, "copying the data disk", "abc")
    assert registry.changes(alice, None)[1] == [view]  # a page opened now still shows it
    later = time.monotonic() + operations.RECENT_S + 1
    monkeypatch.setattr(operations.time, "monotonic", lambda: later)
    assert registry.changes(alice, None)[1] == [] and registry.listed(alice) == [op]
    much_later = later + operations.KEEP_FINISHED_S
    monkeypatch.setattr(operations.time, "monotonic", lambda: much_later)
    assert registry.listed(alice) == []
