"""Placement policies: FGD's fragmentation against hand-computed values, and properties every
policy must keep (no over-commit, model constraints, never refusing what fits)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dockyard.core.policies import (POLICY_NAMES, ClusterState, Fragmentation, NodeSpec, Request, TaskType,
                                    Workload, make_policy)
from dockyard.core.policies.dockyard import cpu_per_gpu, imbalance

SHARE_500 = Request(gpus=1, milli=500, cpu_milli=1000)
ONE_GPU = Request(gpus=1, cpu_milli=1000)
TWO_GPUS = Request(gpus=2, cpu_milli=1000)
CPU_ONLY = Request(cpu_milli=1000)
QUARTERS = Workload([TaskType(r, 1) for r in (SHARE_500, ONE_GPU, TWO_GPUS, CPU_ONLY)])


def one_node(free: list[int], cpu: int = 8000, model: str = "T4") -> ClusterState:
    state = ClusterState([NodeSpec("n0", model, len(free), cpu, 65536)])
    state.gpu_free[0, : len(free)] = free
    return state


def frag(state: ClusterState, workload: Workload = QUARTERS) -> float:
    return float(Fragmentation(workload, state).of_nodes(state, np.array([0]))[0])


def test_fragmentation_matches_the_papers_definition():
    # GPUs free [1000, 1000, 300, 0]; each type has p = 1/4.
    # share 500: fits; GPUs with less than 500 free are fragments: 300 (+0)
    # 1 GPU: fits; GPUs not wholly free: 300
    # 2 GPUs: two wholly free, fits: 300
    # CPU-only: every free GPU is a fragment to it: 2300
    assert frag(one_node([1000, 1000, 300, 0])) == pytest.approx((300 + 300 + 300 + 2300) / 4)
    # a share of 500 on a free GPU: [500, 1000, 300, 0]; 2 GPUs no longer fit -> all 1800
    assert frag(one_node([500, 1000, 300, 0])) == pytest.approx((300 + 800 + 1800 + 1800) / 4)


def test_a_type_that_cannot_run_counts_every_free_gpu():
    # too little CPU for every type: all 2300 free milli-GPU are fragments to each
    assert frag(one_node([1000, 1000, 300, 0], cpu=500)) == pytest.approx(2300)
    # GPU model the type does not accept
    v100_only = Workload([TaskType(Request(gpus=1, milli=200, models=frozenset({"V100"})), 1)])
    assert frag(one_node([1000, 300]), v100_only) == pytest.approx(1300)
    assert frag(one_node([1000, 300], model="V100"), v100_only) == pytest.approx(0)


def test_workload_from_requests_keeps_the_popular_shapes():
    requests = [SHARE_500] * 6 + [ONE_GPU] * 3 + [Request(gpus=8)]
    workload = Workload.from_requests(requests, popularity=0.9)
    assert [(t.request.gpus, t.request.milli, round(t.weight, 3)) for t in workload.types] == [
        (1, 500, round(6 / 9, 3)), (1, 1000, round(3 / 9, 3))]


def test_fgd_takes_the_placement_that_grows_fragmentation_least():
    # a share of 300 on GPU 2 fills it exactly: fragmentation falls; on GPU 0 or 1 it grows
    state = one_node([1000, 1000, 300, 0])
    decision = make_policy("fgd", QUARTERS).place(state, Request(gpus=1, milli=300, cpu_milli=1000))
    assert decision.gpus == (2,)


def test_fgd_and_dockyard_prefer_the_node_where_a_share_fits_tightly():
    nodes = [NodeSpec("fresh", "T4", 4, 32000, 65536), NodeSpec("used", "T4", 4, 32000, 65536)]
    for name in ("fgd", "dockyard"):
        state = ClusterState(nodes)
        state.gpu_free[1] = [500, 1000, 1000, 1000]
        decision = make_policy(name, QUARTERS).place(state, SHARE_500)
        assert (decision.node, decision.gpus) == (1, (0,)), name


def test_dockyard_breaks_ties_towards_the_fuller_node():
    nodes = [NodeSpec("empty", "T4", 8, 8000, 65536), NodeSpec("half", "T4", 8, 8000, 65536)]
    state = ClusterState(nodes)
    state.gpu_free[1, :4] = 0
    state.cpu_free[1] = 4000  # what its tasks took with their GPUs: both nodes are in step
    workload = Workload([TaskType(ONE_GPU, 1)])
    assert make_policy("fgd", workload).place(state, ONE_GPU).node == 0  # a tie: the first node
    assert make_policy("dockyard", workload).place(state, ONE_GPU).node == 1


def test_cpu_per_gpu_weighs_the_gpu_types_by_their_share():
    workload = Workload([TaskType(Request(gpus=1, cpu_milli=10000), 1),
                         TaskType(Request(gpus=1, milli=500, cpu_milli=2000), 1),
                         TaskType(Request(cpu_milli=8000), 2)])  # CPU-only types ask for no GPU: left out
    assert cpu_per_gpu(workload) == pytest.approx((10000 + 2000) / 1.5)
    assert cpu_per_gpu(Workload([TaskType(CPU_ONLY, 1)])) == 0


def test_imbalance_is_the_distance_between_free_gpus_and_what_the_free_cpu_serves():
    # 2 GPUs free; at 2000 milli-cores per GPU 4000 serve 2 GPUs, 40000 serve 20, 1000 half of one
    assert imbalance(np.array([2000, 2000, 2000]), np.array([4000, 40000, 1000]), 2000).tolist() == [0, 18000, 1500]
    assert imbalance(np.array([2000]), np.array([40000]), 0).tolist() == [0]  # no GPU types: nothing to balance


def test_dockyard_keeps_a_nodes_cpu_and_gpus_in_step():
    # both nodes tie for FGD and keep 3 GPUs free; the second keeps the CPU those 3 need, the
    # first keeps ten times as much for tasks that need it
    nodes = [NodeSpec("cpu-rich", "T4", 4, 32000, 65536), NodeSpec("in-step", "T4", 4, 4000, 65536)]
    workload = Workload([TaskType(ONE_GPU, 1)])  # 1000 milli-cores per GPU
    assert make_policy("fgd", workload).place(ClusterState(nodes), ONE_GPU).node == 0
    assert make_policy("dockyard", workload).place(ClusterState(nodes), ONE_GPU).node == 1


def test_dockyard_sends_a_cpu_heavy_task_where_the_cpu_is():
    # FGD sees no difference (the workload's one type still fits either node afterwards) and
    # takes the first; there a 3-core GPU task would leave 3 GPUs with 1 core between them
    nodes = [NodeSpec("in-step", "T4", 4, 4000, 65536), NodeSpec("cpu-rich", "T4", 4, 32000, 65536)]
    workload = Workload([TaskType(ONE_GPU, 1)])
    heavy = Request(gpus=1, cpu_milli=3000)
    assert make_policy("fgd", workload).place(ClusterState(nodes), heavy).node == 0
    assert make_policy("dockyard", workload).place(ClusterState(nodes), heavy).node == 1


def test_apply_refuses_an_over_commit_and_changes_nothing():
    state = one_node([300, 1000])
    before = state.gpu_free.copy()
    bad = state.decide(0, SHARE_500, (0,))
    with pytest.raises(ValueError):
        state.apply(bad)
    assert (state.gpu_free == before).all() and state.cpu_free[0] == 8000


def test_unknown_policy_and_missing_workload_are_refused():
    with pytest.raises(ValueError, match="unknown placement policy"):
        make_policy("round-robin")
    with pytest.raises(ValueError, match="needs the expected workload"):
        make_policy("fgd")


MODELS = ("T4", "V100")
node_specs = st.builds(
    lambda i, model, gpus, cpu, mem, gmem: NodeSpec(f"n{i}", model if gpus else "", gpus, cpu, mem, gmem),
    st.integers(0, 10**6), st.sampled_from(MODELS), st.sampled_from([0, 1, 2, 4, 8]),
    st.integers(0, 64000), st.integers(0, 262144), st.sampled_from([0, 16384, 32768]))


@st.composite
def requests(draw):
    kind = draw(st.sampled_from(["cpu", "share", "whole"]))
    models = draw(st.sampled_from([None, frozenset({"T4"}), frozenset({"V100"}), frozenset(MODELS)]))
    cpu, mem = draw(st.integers(0, 40000)), draw(st.integers(0, 131072))
    if kind == "cpu":
        return Request(cpu_milli=cpu, memory_mib=mem)
    if kind == "share":
        return Request(gpus=1, milli=draw(st.integers(1, 999)), gpu_memory_mib=draw(st.sampled_from([0, 4096, 20000])),
                       models=models, cpu_milli=cpu, memory_mib=mem)
    return Request(gpus=draw(st.sampled_from([1, 2, 4, 8])), models=models, cpu_milli=cpu, memory_mib=mem)


def check_decision(state: ClusterState, request: Request, decision) -> None:
    n = decision.node
    node = state.nodes[n]
    assert state.cpu_free[n] >= request.cpu_milli and state.mem_free[n] >= request.memory_mib
    assert len(decision.gpus) == request.gpus == len(set(decision.gpus))
    if request.gpus:
        assert request.models is None or node.model in request.models
    for g in decision.gpus:
        assert 0 <= g < node.gpus
        if request.shared:
            assert state.gpu_free[n, g] >= request.milli and state.gpu_mem_free[n, g] >= request.gpu_memory_mib
            assert (decision.milli, decision.gpu_memory_mib) == (request.milli, request.gpu_memory_mib)
        else:  # a whole GPU nobody else uses, all of it
            assert state.gpu_free[n, g] == 1000 and state.gpu_mem_free[n, g] == node.gpu_memory_mib
            assert (decision.milli, decision.gpu_memory_mib) == (1000, node.gpu_memory_mib)


@settings(max_examples=60, deadline=None)
@given(st.lists(node_specs, min_size=1, max_size=5), st.lists(requests(), min_size=1, max_size=30),
       st.sampled_from(POLICY_NAMES))
def test_no_policy_over_commits_or_breaks_a_model_constraint(nodes, asks, name):
    state = ClusterState(nodes)
    policy = make_policy(name, Workload.from_requests(asks))
    for request in asks:
        decision = policy.place(state, request)
        if decision is None:
            assert not state.fits(request).any(), "refused a request that fits"
            continue
        check_decision(state, request, decision)
        state.apply(decision)
        assert (state.gpu_free >= 0).all() and (state.gpu_mem_free >= 0).all()
        assert (state.cpu_free >= 0).all() and (state.mem_free >= 0).all()


def test_a_nodes_score_does_not_depend_on_the_batch_it_is_scored_in():
    # ties are decided on integer scores, so a last-bit difference between batch sizes would
    # change decisions; scoring row by row keeps every node's score exact to itself
    rng = np.random.default_rng(1)
    state = ClusterState([NodeSpec(f"n{i}", "T4", 8, 96000, 65536) for i in range(300)])
    state.gpu_free[:] = rng.integers(0, 1001, size=state.gpu_free.shape)
    state.cpu_free[:] = rng.integers(0, 96001, size=300)
    workload = Workload([TaskType(Request(gpus=1, milli=int(m), cpu_milli=int(c)), float(w))
                         for m, c, w in zip(rng.integers(1, 1001, 40), rng.integers(0, 20000, 40), rng.random(40))])
    fragmentation = Fragmentation(workload, state)
    together = fragmentation.of_nodes(state, np.arange(300))
    alone = [fragmentation.of_nodes(state, np.array([n]))[0] for n in range(300)]
    assert together.tolist() == alone
