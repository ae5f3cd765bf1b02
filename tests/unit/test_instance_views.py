"""The instance read model (services/instance_views.py) on a real database: its values
match the one-row reads they replace, and a page of many rows costs as many queries as
a page of few."""

from __future__ import annotations

import contextlib
from datetime import timedelta

from sqlalchemy import event as sa_event
from sqlalchemy import select

from dockyard.db.billing_models import Posting, PriceEntry
from dockyard.db.models import Instance, InstanceEvent, Node, Volume, utcnow
from dockyard.services import allocation, instance_views
from dockyard.services.billing import statements
from tests.unit.billing_fixtures import T0, add_instance, hold_gpu, make_platform, user


@contextlib.contextmanager
def counted(db):
    """The SQL statements `db` sends while inside, in a list."""
    sent: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany):
        sent.append(statement)

    engine = db.get_bind()
    sa_event.listen(engine, "before_cursor_execute", count)
    try:
        yield sent
    finally:
        sa_event.remove(engine, "before_cursor_execute", count)


def _posting(db, instance_id: str, kind: str, amount: int) -> None:
    db.add(Posting(key=f"{instance_id}-{kind}-{amount}", kind=kind, debit="user", credit="revenue", amount=amount,
                   instance_id=instance_id))


def _dress(platform, instance_id: str, n: int, gpu: bool) -> None:
    """Everything the view reads beyond the row: GPUs, an SSH port, costs, a warning, a
    queue place or a volume (by turns)."""
    with platform.sessions.begin() as db:
        i = db.get(Instance, instance_id)
        if gpu:
            hold_gpu(db, instance_id)
        i.status = ("running", "queued", "stopped")[n % 3]
        if i.status == "queued":
            i.queue_seq, i.queued_at = n, T0 + timedelta(minutes=n)
        i.ssh_port = 2200 + n
        i.env = {"A": str(n)}
        i.secret_env = platform.secret_box.seal({"TOKEN": "s", "KEY": "k"})
        i.auto_stop_warned_at = utcnow()
        db.add(InstanceEvent(instance_id=instance_id, at=T0, to_status=i.status, cause="auto-stop warning: old"))
        db.add(InstanceEvent(instance_id=instance_id, at=T0, to_status=i.status, cause=f"auto-stop warning: {n}"))
        _posting(db, instance_id, "usage", 1000 * (n + 1))
        _posting(db, instance_id, "storage", 7)
        _posting(db, instance_id, "recharge", 999_999)  # not a cost
        db.add(Volume(id=f"v{instance_id}", owner_id=i.owner_id, name=f"vol{n}", node_name="local", size_gb=1,
                      engine_name=f"e{instance_id}", instance_id=instance_id, mount_path="/data" if n % 2 else "/mnt/x"))


def _platform_with(count: int):
    platform = make_platform()
    with platform.sessions.begin() as db:
        db.get(Node, "local").public_host = "gpu1.example"
        db.add(PriceEntry(kind="gpu", model="A100-80GB", node="", price=25_000, effective_from=T0, created_by="t"))
        db.add(PriceEntry(kind="no_gpu", model="", node="", price=1_000, effective_from=T0, created_by="t"))
    ids = []
    for n in range(count):
        instance_id = add_instance(platform, "alice" if n % 2 == 0 else "bob")
        _dress(platform, instance_id, n, gpu=n < 3)
        ids.append(instance_id)
    return platform, ids


def _statements_for_views(count: int) -> int:
    platform, _ = _platform_with(count)
    alice = user(platform, "alice")
    with platform.reads.begin() as db:
        found = list(db.scalars(select(Instance)))
        with counted(db) as sent:
            views = instance_views.views(platform, db, found, alice)
    assert len(views) == count
    return len(sent)


def test_many_rows_cost_the_queries_of_a_few():
    few, many = _statements_for_views(3), _statements_for_views(24)
    assert few == many
    assert many <= 10


def test_the_views_values_match_the_one_row_reads():
    platform, ids = _platform_with(4)
    alice = user(platform, "alice")
    with platform.reads.begin() as db:
        found = [db.get(Instance, i) for i in ids]
        views = instance_views.views(platform, db, found, alice)
        assert [v.id for v in views] == ids  # in the order asked
        for n, (i, v) in enumerate(zip(found, views)):
            price, cost = statements.instance_costs(db, platform.settings, i)
            assert (v.price_per_hour, v.cost_so_far) == (price, cost)
            assert [(g.index, g.uuid) for g in v.gpus] == [(g.index, g.uuid) for g in allocation.assigned_gpus(db, i.id)]
            assert v.owner == ("alice" if n % 2 == 0 else "bob")
            assert v.image == "debian-12"
            assert v.ssh_command == f"ssh -p {2200 + n} root@gpu1.example"
            assert v.auto_stop_pending == f"auto-stop warning: {n}"  # the latest
            assert v.secret_env_names == ["KEY", "TOKEN"]
            assert v.env == ({"A": str(n)} if n % 2 == 0 else {"A": "(hidden)"})  # an admin sees others' names only
            assert v.volumes == [f"vol{n}:{'/data' if n % 2 else '/mnt/x'}"]
        first = views[0]
        assert first.price_per_hour == "2.50" and first.price_minor == 25_000
        assert first.cost_so_far == "0.10" and first.cost_minor == 1007  # usage and storage, not the recharge
        assert [g.index for g in first.gpus] == [0]
        assert views[3].gpus == []
        queued = views[1]
        assert queued.status == "queued" and queued.queue_position == 1 and queued.queued_at is not None
        assert views[0].queue_position is None and views[0].queued_at is None
        assert (views[2].status, views[2].queue_position) == ("stopped", None)


def test_a_released_instance_has_no_ssh_command_and_a_node_without_a_host_gives_localhost():
    platform, ids = _platform_with(2)
    alice = user(platform, "alice")
    with platform.sessions.begin() as db:
        db.get(Node, "local").public_host = None
        db.get(Instance, ids[1]).status = "released"
    with platform.reads.begin() as db:
        views = instance_views.views(platform, db, [db.get(Instance, i) for i in ids], alice)
    assert views[0].ssh_command == "ssh -p 2200 root@127.0.0.1"
    assert views[1].ssh_command is None


def test_no_rows_no_queries():
    platform = make_platform()
    alice = user(platform, "alice")
    with platform.reads.begin() as db:
        with counted(db) as sent:
            assert instance_views.views(platform, db, [], alice) == []
    assert sent == []


def test_the_api_answer_is_the_view():
    from dockyard.api.routers.instances import instance_out

    platform, ids = _platform_with(1)
    alice = user(platform, "alice")
    with platform.reads.begin() as db:
        view = instance_views.view(platform, db, db.get(Instance, ids[0]), alice)
    out = instance_out(view).model_dump()
    assert out["gpus"][0]["index"] == 0 and out["gpus"][0]["simulated"] is True
    assert (out["price_per_hour"], out["cost_so_far"], out["owner"], out["image"]) == ("2.50", "0.10", "alice",
                                                                                        "debian-12")
    assert out["ssh_command"] == view.ssh_command and out["ssh_password"] is None
    assert "price_minor" not in out
