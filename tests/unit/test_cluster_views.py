"""The clusters API's views (services/cluster_views.py) on a real database:
its values are what one-cluster-at-a-time reads say, and a list of many clusters with
many members costs as many queries as a list of one with one."""

from __future__ import annotations

from decimal import Decimal

from dockyard.core.placement import ANY_MODEL
from dockyard.db.billing_models import PriceEntry
from dockyard.db.models import Cluster, Instance
from dockyard.services import allocation, cluster_views, clusters, instance_views
from dockyard.services.billing.statements import instance_costs
from tests.unit import on_fake
from tests.unit.billing_fixtures import T0
from tests.unit.on_fake import IMAGE, ann
from tests.unit.test_instance_views import counted

platform = on_fake.platform  # its fixture


def make(platform, name: str, members: int, gpus: int, model: str, running: int = 0,
         subnet: str | None = None) -> str:
    """A cluster whose first `running` members are running (no driver: rows only)."""
    cluster, ids = clusters.create_cluster(platform, ann(platform), clusters.ClusterRequest(
        name=name, image=IMAGE, nodes=members, gpus=gpus, gpu_model=model))
    with platform.sessions.begin() as db:
        for instance_id in ids[:running]:
            db.get(Instance, instance_id).status = "running"
        db.get(Cluster, cluster.id).subnet = subnet
    return cluster.id


def priced(platform) -> None:
    with platform.sessions.begin() as db:
        db.add(PriceEntry(kind="gpu", model="A100-80GB", node="", price=25_000, effective_from=T0, created_by="t"))
        db.add(PriceEntry(kind="no_gpu", model="", node="", price=1_000, effective_from=T0, created_by="t"))


def answer(platform) -> tuple[list, int]:
    viewer = ann(platform)
    with platform.sessions.begin() as db:
        found = clusters.list_clusters(db, viewer)
        with counted(db) as sent:
            out = cluster_views.views(db, platform, found, viewer)
        return out, len(sent)


def one_at_a_time(platform, cluster_id: str) -> dict:
    """What the answer said before it was built in bulk, from reads of one row each."""
    with platform.sessions.begin() as db:
        cluster = db.get(Cluster, cluster_id)
        members = clusters.members(db, cluster_id)
        price, spent = Decimal(0), Decimal(0)
        for member in members:
            p, s = instance_costs(db, platform.settings, member)
            price += Decimal(p) if member.status in ("running", "stopping") else 0
            spent += Decimal(s)
        return {"status": clusters.status_of(db, cluster), "price": str(price), "spent": str(spent),
                "spans": sorted({m.node_name for m in members}),
                "members": [(m.cluster_rank, m.name, m.status, [g.index for g in allocation.assigned_gpus(db, m.id)],
                             instance_views.ssh_command(db, m)) for m in members]}


def test_the_answer_says_what_one_cluster_at_a_time_reads_say(platform):
    priced(platform)
    ids = [make(platform, "a", 2, 1, "A100-80GB", running=1, subnet="10.214.0.0/24"),
           make(platform, "b", 3, 0, ANY_MODEL, running=3)]
    out, _ = answer(platform)
    assert {c.id for c in out} == set(ids)
    for shown in out:
        expected = one_at_a_time(platform, shown.id)
        assert shown.status == expected["status"] and shown.spans == expected["spans"]
        assert (shown.price_per_hour, shown.cost_so_far) == (expected["price"], expected["spent"])
        assert [(m.rank, m.name, m.status, m.gpus, m.ssh_command) for m in shown.members] == expected["members"]
        assert shown.owner == "ann" and shown.image == IMAGE
    a = next(c for c in out if c.name == "a")
    assert a.price_per_hour != "0" and [m.address for m in a.members] == ["10.214.0.2", "10.214.0.3"]
    assert all(len(m.gpus) == 1 for m in a.members)


def test_many_clusters_of_many_members_cost_as_many_queries_as_one_of_one(platform):
    priced(platform)
    make(platform, "solo", 1, 1, "A100-80GB", running=1)
    out, few = answer(platform)
    assert len(out) == 1
    make(platform, "pair", 2, 1, "A100-80GB", running=2, subnet="10.214.1.0/24")
    make(platform, "four", 4, 1, "RTX-4090", running=1)
    make(platform, "cpu", 5, 0, ANY_MODEL)
    out, many = answer(platform)
    assert sorted(len(c.members) for c in out) == [1, 2, 4, 5]
    assert many == few
    assert few <= 12, few
