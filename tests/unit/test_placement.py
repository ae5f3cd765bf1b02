"""Choosing a node and specific GPUs for a request."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dockyard.core.errors import Conflict, InvalidInput
from dockyard.core.placement import ANY_MODEL, FreeGpu, NodeView, check_request, not_enough_message, place
from dockyard.core.policies import POLICY_NAMES

MODELS = ["A100", "H100", "T4"]


def node(name, spec, free=None, online=True, start_id=0):
    """A node from {"A100": 4, ...}; `free` lists the free indexes (default: all)."""
    gpus, index = [], 0
    for model, count in spec.items():
        for _ in range(count):
            gpus.append(FreeGpu(id=start_id + index, index=index, uuid=f"GPU-{name}-{index}", model=model))
            index += 1
    if free is not None:
        gpus = [g for g in gpus if g.index in free]
    return NodeView(name=name, models=dict(spec), free=gpus, online=online)


# ---------------------------------------------------------------- check_request


def test_check_request_accepts_possible_requests():
    nodes = [node("a", {"A100": 4}), node("b", {"T4": 2, "H100": 8})]
    for model, count in [("A100", 4), ("H100", 8), ("T4", 1), (ANY_MODEL, 8), (ANY_MODEL, 0), ("T4", 0)]:
        assert check_request(nodes, model, count) is None


def test_check_request_unknown_model_lists_known_models():
    nodes = [node("a", {"A100": 4}), node("b", {"T4": 2, "H100": 8})]
    with pytest.raises(InvalidInput) as err:
        check_request(nodes, "V100", 1)
    assert err.value.field == "gpu_model"
    assert "'V100'" in err.value.message
    assert "A100, H100, T4" in err.value.message


def test_check_request_unknown_model_refused_even_for_zero_gpus():
    with pytest.raises(InvalidInput) as err:
        check_request([node("a", {"A100": 1})], "V100", 0)
    assert err.value.field == "gpu_model"


def test_check_request_unknown_model_without_nodes_says_none():
    with pytest.raises(InvalidInput) as err:
        check_request([], "A100", 1)
    assert err.value.field == "gpu_model"
    assert err.value.message.endswith("none")


def test_check_request_count_above_one_node_is_refused():
    # 6 A100s in all, but at most 4 on one node.
    nodes = [node("a", {"A100": 4}), node("b", {"A100": 2, "T4": 8})]
    with pytest.raises(InvalidInput) as err:
        check_request(nodes, "A100", 5)
    assert err.value.field == "gpu_count"
    assert "at most 4 A100 GPUs on one node" in err.value.message
    check_request(nodes, "A100", 4)


def test_check_request_any_model_counts_one_model_per_node():
    # Node b holds 10 GPUs but only 8 of one model.
    nodes = [node("a", {"A100": 4}), node("b", {"A100": 2, "T4": 8})]
    check_request(nodes, ANY_MODEL, 8)
    with pytest.raises(InvalidInput) as err:
        check_request(nodes, ANY_MODEL, 9)
    assert err.value.field == "gpu_count"
    assert "at most 8 GPUs of one model" in err.value.message


def test_check_request_counts_offline_and_busy_gpus():
    # It refuses what could never fit; busy or offline GPUs could free up.
    nodes = [node("a", {"A100": 4}, free=set(), online=False)]
    check_request(nodes, "A100", 4)


@pytest.mark.parametrize("model", ["A100", ANY_MODEL])
def test_check_request_negative_count_refused(model):
    with pytest.raises(InvalidInput) as err:
        check_request([node("a", {"A100": 4})], model, -1)
    assert err.value.field == "gpu_count"


def test_check_request_any_gpu_with_no_gpus_anywhere():
    with pytest.raises(InvalidInput) as err:
        check_request([node("a", {})], ANY_MODEL, 1)
    assert err.value.field == "gpu_count"
    check_request([node("a", {})], ANY_MODEL, 0)


# ---------------------------------------------------------------- place: examples


def test_place_best_fit_prefers_smallest_sufficient_block():
    nodes = [node("big", {"A100": 8}), node("small", {"A100": 2}), node("tiny", {"A100": 1})]
    p = place(nodes, "A100", 2)
    assert p.node == "small"
    assert [g.uuid for g in p.gpus] == ["GPU-small-0", "GPU-small-1"]


def test_place_takes_lowest_indexes():
    p = place([node("a", {"A100": 8}, free={1, 3, 5, 7})], "A100", 2)
    assert [g.index for g in p.gpus] == [1, 3]


def test_place_prefers_previous_gpus_when_free():
    n = node("a", {"A100": 8}, free={0, 1, 2, 5, 6})
    p = place([n], "A100", 2, preferred_uuids=frozenset({"GPU-a-6", "GPU-a-5", "GPU-a-3"}))
    assert [g.uuid for g in p.gpus] == ["GPU-a-5", "GPU-a-6"]
    # One preferred GPU is busy: the other comes first, then the lowest free index.
    p = place([n], "A100", 2, preferred_uuids=frozenset({"GPU-a-3", "GPU-a-6"}))
    assert [g.uuid for g in p.gpus] == ["GPU-a-6", "GPU-a-0"]


def test_place_skips_offline_nodes():
    nodes = [node("off", {"A100": 2}, online=False), node("on", {"A100": 4})]
    assert place(nodes, "A100", 2).node == "on"


def test_place_any_model_does_not_mix_models():
    # 2 A100 + 2 T4 free on one node: 3 of one model is impossible there.
    nodes = [node("mixed", {"A100": 2, "T4": 2}), node("t4s", {"T4": 3})]
    p = place(nodes, ANY_MODEL, 3)
    assert p.node == "t4s"
    assert {g.model for g in p.gpus} == {"T4"}


def test_place_zero_gpus_returns_no_gpus_on_an_online_node():
    nodes = [node("off", {"A100": 8}, online=False), node("a", {"A100": 1}), node("b", {"A100": 4})]
    p = place(nodes, ANY_MODEL, 0)
    assert p.gpus == ()
    assert p.node == "a"  # the default policy packs: the node with the fewest free GPUs


def test_place_zero_gpus_with_no_online_node_conflicts():
    with pytest.raises(Conflict, match="no node is online"):
        place([node("a", {"A100": 1}, online=False)], ANY_MODEL, 0)


def test_place_not_enough_says_how_many_are_free():
    nodes = [node("a", {"A100": 4}, free={0, 2}), node("b", {"A100": 4, "T4": 4}, free={0, 4, 5, 6, 7})]
    with pytest.raises(Conflict) as err:
        place(nodes, "A100", 3)
    assert err.value.status_code == 409
    assert err.value.message == (
        "not enough free A100 GPUs: asked for 3, 3 free in all, at most 2 free on one node"
    )


def test_not_enough_message_any_model():
    nodes = [node("a", {"A100": 2, "T4": 3}), node("b", {"H100": 1})]
    assert not_enough_message(nodes, ANY_MODEL, 4) == (
        "not enough free GPUs: asked for 4, 6 free in all, at most 3 free on one node"
    )
    assert not_enough_message([], "A100", 1) == (
        "not enough free A100 GPUs: asked for 1, 0 free in all, at most 0 free on one node"
    )


def test_place_conflict_ignores_offline_free_gpus():
    nodes = [node("off", {"A100": 8}, online=False), node("on", {"A100": 1})]
    with pytest.raises(Conflict) as err:
        place(nodes, "A100", 2)
    assert "1 free in all" in err.value.message


# ---------------------------------------------------------------- place: properties


@st.composite
def clusters(draw):
    names = draw(st.lists(st.sampled_from("abcdefgh"), min_size=0, max_size=5, unique=True))
    nodes, next_id = [], 0
    for name in names:
        spec = draw(st.dictionaries(st.sampled_from(MODELS), st.integers(1, 6), max_size=3))
        total = sum(spec.values())
        free = draw(st.sets(st.integers(0, max(total - 1, 0)), max_size=total)) if total else set()
        online = draw(st.booleans() | st.just(True))
        nodes.append(node(name, spec, free=free, online=online, start_id=next_id))
        next_id += total
    return nodes


def _groups(nodes, model):
    """(node, model) -> free GPUs, for online nodes and models the request accepts."""
    groups = {}
    for n in nodes:
        if not n.online:
            continue
        for g in n.free:
            if model in (ANY_MODEL, g.model):
                groups.setdefault((n.name, g.model), []).append(g)
    return groups


@settings(max_examples=200, deadline=None)
@given(
    nodes=clusters(),
    model=st.sampled_from([*MODELS, ANY_MODEL]),
    count=st.integers(0, 7),
    data=st.data(),
    policy=st.sampled_from(POLICY_NAMES),
)
def test_place_properties(nodes, model, count, data, policy):
    for n in nodes:
        n.policy = policy
    all_uuids = sorted(g.uuid for n in nodes for g in n.free) + ["GPU-gone-0"]
    preferred = frozenset(data.draw(st.sets(st.sampled_from(all_uuids), max_size=4)))
    groups = _groups(nodes, model)
    online = [n for n in nodes if n.online]

    try:
        p = place(nodes, model, count, preferred)
    except Conflict as err:
        if count == 0:
            assert not online
        else:
            assert all(len(free) < count for free in groups.values())
            total = sum(len(free) for free in groups.values())
            assert f"asked for {count}, {total} free in all" in err.message
        return

    by_name = {n.name: n for n in nodes}
    assert p.node in by_name and by_name[p.node].online
    assert len(p.gpus) == count
    if count == 0:
        assert p.gpus == ()
        return

    assert len({g.uuid for g in p.gpus}) == count
    assert len({g.id for g in p.gpus}) == count
    chosen_node = by_name[p.node]
    assert set(p.gpus) <= set(chosen_node.free)
    (chosen_model,) = {g.model for g in p.gpus}
    assert model in (ANY_MODEL, chosen_model)

    # Best fit: no sufficient group has fewer free GPUs.
    chosen_free = groups[(p.node, chosen_model)]
    for free in groups.values():
        if len(free) >= count and policy == "best-fit":
            assert len(chosen_free) <= len(free)

    # Preferred GPUs come first, then the lowest indexes.
    pref_free = sorted((g for g in chosen_free if g.uuid in preferred), key=lambda g: g.index)
    rest = sorted((g for g in chosen_free if g.uuid not in preferred), key=lambda g: g.index)
    expected = (pref_free + rest)[:count]
    assert set(p.gpus) == set(expected)
    assert sum(g.uuid in preferred for g in p.gpus) == min(count, len(pref_free))


@settings(max_examples=100, deadline=None)
@given(nodes=clusters(), model=st.sampled_from([*MODELS, ANY_MODEL]), count=st.integers(-2, 8))
def test_check_request_agrees_with_place_on_an_idle_cluster(nodes, model, count):
    """What check_request accepts fits when every GPU is free; what it refuses for
    gpu_count never fits."""
    idle = [node(n.name, n.models) for n in nodes]
    try:
        check_request(nodes, model, count)
    except InvalidInput as err:
        assert err.field in ("gpu_model", "gpu_count")
        if err.field == "gpu_model":
            assert model not in {m for n in nodes for m in n.models}
            assert model != ANY_MODEL
        elif count >= 0:
            with pytest.raises(Conflict):
                place(idle, model, count)
        else:
            assert count < 0
        return
    assert count >= 0
    if idle:
        p = place(idle, model, count)
        assert len(p.gpus) == count
