"""Clusters: all-or-nothing placement of K members, and what each member is told."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dockyard.core import clusters as core
from dockyard.core.clusters import ClusterShape, check_name, check_shape, place_cluster
from dockyard.core.errors import Conflict, InvalidInput
from dockyard.core.placement import ANY_MODEL
from tests.unit.test_placement import node

SWARM = {"a": "s1", "b": "s1", "c": "s1"}


def shape(k, n, model="A100"):
    return ClusterShape(members=k, gpus=n, model=model)


def test_members_fit_on_one_node_when_one_has_room():
    nodes = [node("a", {"A100": 2}), node("b", {"A100": 8}, start_id=100)]
    placed = place_cluster(nodes, shape(4, 2), SWARM)
    assert [p.node for p in placed] == ["b"] * 4
    gpus = [g.index for p in placed for g in p.gpus]
    assert sorted(gpus) == list(range(8)) and len(set(gpus)) == 8


def test_best_fit_picks_the_fullest_node_that_holds_them_all():
    nodes = [node("a", {"A100": 4}), node("b", {"A100": 8}, start_id=100)]
    assert {p.node for p in place_cluster(nodes, shape(2, 2))} == {"a"}


def test_members_span_nodes_of_one_swarm_largest_first():
    nodes = [node("a", {"A100": 2}), node("b", {"A100": 4}, start_id=100), node("c", {"A100": 1}, start_id=200)]
    placed = place_cluster(nodes, shape(3, 2), SWARM)
    assert [p.node for p in placed] == ["b", "b", "a"]
    assert all(len(p.gpus) == 2 for p in placed)


def test_without_a_swarm_members_do_not_span_nodes():
    nodes = [node("a", {"A100": 2}), node("b", {"A100": 2}, start_id=100)]
    with pytest.raises(Conflict) as err:
        place_cluster(nodes, shape(2, 2), {"a": None, "b": None})
    assert "room for 1 now, 1 member (2 GPUs) missing" in err.value.message
    assert "in no Docker swarm" in err.value.message
    assert [p.node for p in place_cluster(nodes, shape(2, 2), SWARM)] == ["a", "b"]


def test_refusal_says_what_is_missing_and_places_nothing():
    nodes = [node("a", {"A100": 4}, free=[0, 1, 2]), node("b", {"A100": 4}, free=[0], start_id=100)]
    before = [list(n.free) for n in nodes]
    with pytest.raises(Conflict) as err:
        place_cluster(nodes, shape(3, 2), SWARM)
    message = err.value.message
    assert "cluster of 3 members with 2 each" in message and "room for 1 now" in message
    assert "2 members (4 GPUs) missing" in message and "a: 3, b: 1" in message
    assert [list(n.free) for n in nodes] == before  # the caller's views are untouched


def test_any_model_never_mixes_models():
    nodes = [node("a", {"A100": 2, "T4": 3})]
    placed = place_cluster(nodes, shape(3, 1, ANY_MODEL), SWARM)
    assert {g.model for p in placed for g in p.gpus} == {"T4"}
    with pytest.raises(Conflict):
        place_cluster(nodes, shape(4, 1, ANY_MODEL), SWARM)  # 2 A100 + 3 T4 free, but not 4 of one


def test_zero_gpu_members_share_one_node():
    nodes = [node("a", {"A100": 2}), node("b", {"A100": 4})]
    placed = place_cluster(nodes, shape(3, 0, ANY_MODEL))
    # the default policy (dockyard) packs: the node with fewer free GPUs, the big one stays whole
    assert [p.node for p in placed] == ["a"] * 3 and all(p.gpus == () for p in placed)


def test_offline_nodes_are_not_used():
    nodes = [node("a", {"A100": 8}, online=False), node("b", {"A100": 2}, start_id=100)]
    with pytest.raises(Conflict):
        place_cluster(nodes, shape(2, 2), SWARM)


@pytest.mark.parametrize("k", [0, -1, 17])
def test_member_count_out_of_range_is_refused(k):
    with pytest.raises(InvalidInput) as err:
        check_shape([node("a", {"A100": 8})], shape(k, 1), max_members=16)
    assert err.value.field == "nodes" and "1 to 16" in err.value.message and f"got {k}" in err.value.message


def test_cluster_larger_than_the_pool_is_refused():
    nodes = [node("a", {"A100": 4}), node("b", {"A100": 3, "T4": 8})]
    with pytest.raises(InvalidInput) as err:
        check_shape(nodes, shape(4, 2), max_members=16)
    assert err.value.field == "nodes"
    assert "larger than the pool" in err.value.message and "room for 3 such members" in err.value.message
    assert "a: 4, b: 3" in err.value.message
    check_shape(nodes, shape(3, 2), max_members=16)


def test_mixed_and_unknown_models_are_refused():
    nodes = [node("a", {"A100": 4, "T4": 4})]
    with pytest.raises(InvalidInput) as err:
        check_shape(nodes, shape(2, 1, "A100,T4"), max_members=16)
    assert err.value.field == "gpu_model" and "one model" in err.value.message
    with pytest.raises(InvalidInput) as err:
        check_shape(nodes, shape(2, 1, "V100"), max_members=16)
    assert "A100, T4" in err.value.message


@pytest.mark.parametrize("name", ["", "Big", "a_b", "-a", "x" * 51])
def test_bad_cluster_names(name):
    with pytest.raises(InvalidInput) as err:
        check_name(name)
    assert err.value.field == "name"


def test_member_environment_and_hostfile():
    ips = core.member_ips("10.214.3.0/24", 2)
    assert ips == ["10.214.3.2", "10.214.3.3"]
    env = core.member_env("job", 1, 2, 4, ips)
    assert env["MASTER_ADDR"] == "job-0" and env["MASTER_PORT"] == "29500"
    assert (env["NNODES"], env["NODE_RANK"], env["NPROC_PER_NODE"], env["WORLD_SIZE"]) == ("2", "1", "4", "8")
    assert env["DOCKYARD_NODE_IPS"] == "10.214.3.2,10.214.3.3"
    assert env["DOCKYARD_NODE_HOSTS"] == "job-0,job-1"
    assert core.hostfile("job", 2, 4) == "job-0 slots=4\njob-1 slots=4\n"
    assert core.hostfile("cpu", 2, 0) == "cpu-0 slots=1\ncpu-1 slots=1\n"  # CPU members run one process
    assert core.dynamic_range("10.214.3.0/24") == "10.214.3.128/25"  # never holds a member's address


def test_pick_subnet_skips_taken_ones():
    assert core.pick_subnet("10.214.0.0/16", 24, ["10.214.0.0/24", "10.214.1.0/25"]) == "10.214.2.0/24"
    with pytest.raises(Conflict):
        core.pick_subnet("10.214.0.0/23", 24, ["10.214.0.0/23"])


def test_cluster_status_from_members():
    assert core.cluster_status(["running", "running"]) == "running"
    assert core.cluster_status(["running", "starting"]) == "starting"
    assert core.cluster_status(["running", "failed"]) == "degraded"
    assert core.cluster_status(["running", "stopped"]) == "mixed"


@settings(max_examples=200, deadline=None)
@given(
    free=st.lists(st.lists(st.sampled_from(["A100", "T4"]), max_size=8), min_size=1, max_size=4),
    k=st.integers(1, 6), n=st.integers(1, 4), model=st.sampled_from(["A100", "T4", ANY_MODEL]),
    swarm=st.booleans(),
)
def test_placement_is_all_or_nothing_and_never_double_books(free, k, n, model, swarm):
    nodes = []
    for i, models in enumerate(free):
        spec = {}
        for m in models:
            spec[m] = spec.get(m, 0) + 1
        nodes.append(node(f"n{i}", spec, start_id=i * 100))
    groups = {v.name: ("s" if swarm else None) for v in nodes}
    try:
        placed = place_cluster(nodes, shape(k, n, model), groups)
    except Conflict:
        # Nothing fits: then no single node (or, in a swarm, all together) had room.
        for m in ["A100", "T4"]:
            if model in (ANY_MODEL, m):
                room = [sum(1 for g in v.free if g.model == m) // n for v in nodes]
                assert max(room) < k and (not swarm or sum(room) < k)
        return
    assert len(placed) == k
    ids = [g.id for p in placed for g in p.gpus]
    assert len(ids) == len(set(ids)) == k * n
    assert len({g.model for p in placed for g in p.gpus}) == 1
    assert swarm or len({p.node for p in placed}) == 1
    for p in placed:
        view = next(v for v in nodes if v.name == p.node)
        assert set(p.gpus) <= set(view.free)
