"""Real placement (core/placement.place) decided by the policies of core/policies: each pool by
its own placement_policy, for whole GPUs, shares and MIG profiles, within the model, CPU and
memory an instance would get."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dockyard.core.errors import Conflict
from dockyard.core.placement import ANY_MODEL, FreeGpu, HostShare, NodeView, SharedGpu, Slot, place
from dockyard.core.policies import POLICY_NAMES, ClusterState, NodeSpec, Request, Workload, make_policy
from dockyard.core.sharing import MIG, MPS, parse_share
from tests.unit.test_policies import check_decision, node_specs, requests

GIB = 2**30
HOST = HostShare(cpus_per_gpu=4, memory_per_gpu_bytes=16 * GIB, no_gpu_cpus=0.5, no_gpu_memory_bytes=2 * GIB)


def node(name, free, model="A100", total=None, policy="dockyard", start=0, **host):
    """A node with GPUs `start`.. of which `free` are free (as whole GPUs)."""
    total = total or free
    gpus = [FreeGpu(id=start + i, index=i, uuid=f"{name}-{i}", model=model, slots=(start + i,)) for i in range(free)]
    return NodeView(name=name, models={model: total}, free=gpus, policy=policy, **host)


def with_host(view, cpus=16, memory_gb=64, used_cpus=0, used_gb=0):
    view.cpus, view.host_share = cpus, HOST
    view.capacity_cpus, view.capacity_memory_bytes = cpus, memory_gb * GIB
    view.cpus_used, view.memory_used_bytes = used_cpus, used_gb * GIB
    return view


def test_the_pools_policy_chooses_the_node():
    # a: 4 of 4 free; b: 1 of 4 free (3 rented). First fit takes a, best fit and dockyard b.
    def views(policy):
        return [node("a", 4, policy=policy), node("b", 1, total=4, policy=policy, start=10)]

    assert place(views("first-fit"), ANY_MODEL, 1).node == "a"
    assert place(views("best-fit"), ANY_MODEL, 1).node == "b"
    assert place(views("dockyard"), ANY_MODEL, 1).node == "b"
    assert place(views("fgd"), ANY_MODEL, 1).node in ("a", "b")  # decided, whichever scores best


def test_pools_are_tried_in_order_and_each_keeps_its_policy():
    # Pool first-fit (a, b) comes first; c (best-fit) only gets what the first pool cannot hold.
    views = [node("a", 2, policy="first-fit"), node("b", 1, total=2, policy="first-fit", start=10),
             node("c", 8, policy="best-fit", start=20)]
    assert place(views, ANY_MODEL, 1).node == "a"
    assert place(views, ANY_MODEL, 4).node == "c"


def test_model_constraint_and_mixed_nodes():
    mixed = node("m", 2, model="T4", start=0)
    mixed.free += [FreeGpu(id=5, index=2, uuid="m-2", model="A100", slots=(5,))]
    mixed.models["A100"] = 1
    views = [mixed, node("b", 2, model="T4", start=10, policy="dockyard")]
    assert [g.model for g in place(views, "A100", 1).gpus] == ["A100"]
    with pytest.raises(Conflict, match="not enough free A100 GPUs: asked for 2"):
        place(views, "A100", 2)  # one A100 on m: a request never mixes models
    assert {g.model for g in place(views, "T4", 2).gpus} == {"T4"}


@pytest.mark.parametrize("policy", ["first-fit", "best-fit", "fgd", "dockyard"])
def test_cpu_and_memory_of_gpu_instances_bound_the_node(policy):
    # 4 CPUs per GPU: a has 8 CPUs with 4 used, so one more GPU's worth fits, not two.
    a = with_host(node("a", 4, policy=policy), cpus=8, used_cpus=4)
    assert place([a], ANY_MODEL, 1).node == "a"
    with pytest.raises(Conflict):
        place([a], ANY_MODEL, 2)
    # memory: 16 GiB per GPU, 40 of 64 GiB held: one GPU fits, two do not
    b = with_host(node("b", 4, policy=policy), cpus=64, memory_gb=64, used_gb=40)
    assert len(place([b], ANY_MODEL, 1).gpus) == 1
    with pytest.raises(Conflict):
        place([b], ANY_MODEL, 2)
    # a share needs its part: half a GPU is 2 CPUs
    shared = with_host(NodeView("s", {"A100": 1}, [], policy=policy, shared=[SharedGpu(
        FreeGpu(1, 0, "s-0", "A100"), MPS, (Slot(1, True), Slot(2, True)))]), cpus=8, used_cpus=6)
    assert place([shared], ANY_MODEL, 1, share=parse_share("0.5")).share_slots == (1,)
    shared.cpus_used = 6.5
    with pytest.raises(Conflict, match="no free share of 0.5"):
        place([shared], ANY_MODEL, 1, share=parse_share("0.5"))


def test_allocation_ratios_let_an_operator_over_commit():
    a = with_host(node("a", 4), cpus=8, used_cpus=8)  # GPUs free, every CPU promised
    with pytest.raises(Conflict):
        place([a], ANY_MODEL, 1)
    a.capacity_cpus = 8 * 1.5  # cpu_allocation_ratio = 1.5
    assert len(place([a], ANY_MODEL, 1).gpus) == 1
    with pytest.raises(Conflict):
        place([a], ANY_MODEL, 2)


def test_a_gpu_request_goes_where_cpus_are_left():
    full = with_host(node("a", 4, policy="first-fit"), cpus=16, used_cpus=16)  # GPUs free, CPUs all held
    room = with_host(node("b", 1, total=4, policy="first-fit", start=10), cpus=16, used_cpus=12)
    assert place([full, room], ANY_MODEL, 1).node == "b"


def test_instances_without_gpus_run_on_top_of_the_gpu_shares():
    # GPU instances hold every CPU: one without GPUs still fits (a --no-gpu start reaches its files)
    a = with_host(node("a", 0, total=4), cpus=16, used_cpus=16, used_gb=64)
    assert place([a], ANY_MODEL, 0).gpus == ()
    tiny = with_host(node("t", 0, total=1), memory_gb=1)  # less memory than no_gpu_memory_gb: never
    with pytest.raises(Conflict, match="CPUs and memory"):
        place([tiny], ANY_MODEL, 0)


def test_a_restart_gets_its_gpus_back_when_the_policy_finds_them_alike():
    views = [node("a", 4)]
    assert [g.uuid for g in place(views, ANY_MODEL, 2, frozenset({"a-3", "a-1"})).gpus] == ["a-1", "a-3"]


def test_mig_profiles_go_to_gpus_that_have_one_free():
    def mig(name, gpu_id, profiles, held=()):
        return SharedGpu(FreeGpu(gpu_id, gpu_id, f"{name}-{gpu_id}", "H200"), MIG, tuple(
            Slot(gpu_id * 10 + i, gpu_id * 10 + i not in held, p, f"MIG-{gpu_id}-{i}") for i, p in enumerate(profiles)))

    view = NodeView("h", {}, [], shared=[mig("h", 0, ["3g.71gb", "3g.71gb"]), mig("h", 1, ["1g.18gb", "1g.18gb"], held=(10,))])
    for policy in ("first-fit", "best-fit", "fgd", "dockyard"):
        view.policy = policy
        assert place([view], "H200", 1, share=parse_share("1g.18gb")).share_slots == (11,)
        assert place([view], "H200", 1, share=parse_share("3g.71gb")).share_slots == (0,)
        with pytest.raises(Conflict):
            place([view], "H200", 1)  # GPUs in MIG mode never rent whole


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4), st.floats(0, 16), st.sampled_from(["A100", "T4"])),
                min_size=1, max_size=4),
       st.sampled_from(["first-fit", "best-fit", "fgd", "dockyard"]), st.sampled_from([0, 1, 2, 4]),
       st.sampled_from([ANY_MODEL, "A100", "T4"]))
def test_every_policy_places_only_what_fits(nodes, policy, count, model):
    views = []
    for i, (free, taken, used, gpu_model) in enumerate(nodes):
        v = with_host(node(f"n{i}", free, model=gpu_model, total=free + taken, policy=policy, start=100 * i),
                      cpus=16, used_cpus=used)
        views.append(v)
    fits = [v for v in views if (count == 0 or (model in (ANY_MODEL, v.free[0].model if v.free else "")
                                                and len(v.free) >= count and v.cpus - v.cpus_used >= 4 * count))]
    try:
        p = place(views, model, count)
    except Conflict:
        assert not fits
        return
    chosen = next(v for v in views if v.name == p.node)
    assert chosen in fits and len(p.gpus) == count and len(set(p.gpus)) == count
    assert all(g in chosen.free and model in (ANY_MODEL, g.model) for g in p.gpus)


@settings(max_examples=60, deadline=None)
@given(st.lists(node_specs, min_size=1, max_size=5), st.lists(requests(), min_size=1, max_size=20),
       st.sampled_from(POLICY_NAMES), st.randoms(use_true_random=False))
def test_no_policy_uses_a_gpu_its_masks_rule_out(nodes, asks, name, rng):
    """Real placement narrows which GPUs rent whole and which take a share: no policy steps
    outside those masks, and none refuses what fits inside them."""
    state = ClusterState(nodes)
    state.takes_whole &= np.array([[rng.random() < 0.7 for _ in row] for row in state.exists])
    state.takes_share &= np.array([[rng.random() < 0.7 for _ in row] for row in state.exists])
    policy = make_policy(name, Workload.from_requests(asks))
    for request in asks:
        decision = policy.place(state, request)
        if decision is None:
            assert not state.fits(request).any(), "refused a request that fits"
            continue
        check_decision(state, request, decision)
        mask = state.takes_share if request.shared else state.takes_whole
        assert all(mask[decision.node, g] for g in decision.gpus)
        state.apply(decision)


@pytest.mark.parametrize("name", ["fgd", "dockyard"])
def test_nodes_alike_but_for_their_masks_are_told_apart(name):
    # many nodes in the same state are scored once each state (candidates._alike): the masks
    # must count as part of the state, or a node that takes no share would answer for the rest
    state = ClusterState([NodeSpec(f"n{i}", "A100", 2, 8000, 65536, 1000) for i in range(40)])
    state.takes_share[:39] = False
    share = Request(gpus=1, milli=500, gpu_memory_mib=500)
    assert make_policy(name, Workload.from_requests([share])).place(state, share).node == 39
    state.takes_whole[1:] = False
    whole = Request(gpus=2)
    assert make_policy(name, Workload.from_requests([whole])).place(state, whole).node == 0
