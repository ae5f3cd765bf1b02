"""Placing shares of one GPU (core/placement.py), alone and next to whole-GPU rentals."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dockyard.core.errors import Conflict, InvalidInput
from dockyard.core.placement import ANY_MODEL, FreeGpu, NodeView, SharedGpu, Slot, check_request, offered_shares, place
from dockyard.core.sharing import MIG, MPS, TIME_SLICING, parse_share


class Books:
    """Slot-level books of a few nodes, as the database holds them: every GPU has slots,
    each held by at most one instance. Views are built from them as services build them."""

    def __init__(self):
        self.gpus = []  # (node, gpu id, index, model, mode, [(slot id, profile)])
        self.held: dict[int, str] = {}  # slot id -> holder
        self.next_slot = 0

    def add(self, node, model, mode=None, parts=1, profiles=()):
        gpu_id = len(self.gpus)
        index = sum(1 for g in self.gpus if g[0] == node)
        layout = list(profiles) if mode == MIG else [None] * parts
        slots = []
        for profile in layout:
            slots.append((self.next_slot, profile))
            self.next_slot += 1
        self.gpus.append((node, gpu_id, index, model, mode, slots))
        return gpu_id

    def views(self):
        out = {}
        for node, gpu_id, index, model, mode, slots in self.gpus:
            view = out.setdefault(node, NodeView(name=node, models={}))
            gpu = FreeGpu(id=gpu_id, index=index, uuid=f"GPU-{gpu_id}", model=model)
            ids = tuple(s for s, _ in slots)
            if mode != MIG:
                view.models[model] = view.models.get(model, 0) + 1
                if not any(s in self.held for s in ids):
                    view.free.append(FreeGpu(gpu_id, index, gpu.uuid, model, ids))
            if mode:
                view.shared.append(SharedGpu(gpu, mode, tuple(
                    Slot(s, s not in self.held, p, f"MIG-{s}" if p else None) for s, p in slots)))
        return list(out.values())

    def assign(self, placement, holder):
        """As the database does: a slot already held is refused (the primary key)."""
        for slot in placement.slot_ids:
            if slot in self.held:
                raise AssertionError(f"slot {slot} assigned twice")
        for slot in placement.slot_ids:
            self.held[slot] = holder

    def release(self, holder):
        self.held = {s: h for s, h in self.held.items() if h != holder}


def test_two_halves_share_one_gpu_and_a_third_goes_to_another():
    books = Books()
    books.add("a", "RTX-4090", TIME_SLICING, 2)
    books.add("b", "RTX-4090", TIME_SLICING, 2)
    half = parse_share("0.5")
    placed = []
    for holder in ("i1", "i2", "i3"):
        p = place(books.views(), ANY_MODEL, 1, share=half)
        books.assign(p, holder)
        placed.append((p.node, p.gpus[0].id))
    assert placed[0] == placed[1]  # packed on one GPU
    assert placed[2] != placed[0]
    fourth = place(books.views(), ANY_MODEL, 1, share=half)
    assert (fourth.node, fourth.gpus[0].id) == placed[2]  # the other half of the third's GPU
    books.assign(fourth, "i4")
    with pytest.raises(Conflict, match="no free share of 0.5"):
        place(books.views(), ANY_MODEL, 1, share=half)


def test_a_partly_used_gpu_fills_before_a_free_one_is_cut():
    books = Books()
    books.add("a", "A100", MPS, 4)
    books.add("a", "A100", MPS, 4)
    books.assign(place(books.views(), "A100", 1, share=parse_share("0.25")), "q")
    p = place(books.views(), "A100", 1, share=parse_share("0.5"))
    assert p.gpus[0].id == 0 and len(p.slot_ids) == 2


def test_whole_and_shared_rentals_exclude_each_other():
    books = Books()
    books.add("a", "A100", TIME_SLICING, 2)
    books.assign(place(books.views(), "A100", 1), "whole")  # takes both slots
    assert sorted(books.held) == [0, 1]
    with pytest.raises(Conflict):
        place(books.views(), "A100", 1, share=parse_share("0.5"))
    books.release("whole")
    books.assign(place(books.views(), "A100", 1, share=parse_share("0.5")), "half")
    with pytest.raises(Conflict, match="not enough free A100 GPUs"):
        place(books.views(), "A100", 1)  # half of it is held: it is not free whole


def test_mig_shares_go_by_profile_and_mig_gpus_never_rent_whole():
    books = Books()
    books.add("a", "H200", MIG, profiles=["3g.71gb", "1g.18gb", "1g.18gb"])
    views = books.views()
    assert views[0].models == {} and views[0].free == []
    p = place(views, "H200", 1, share=parse_share("1g.18gb"))
    assert p.slot_ids == (1,)
    books.assign(p, "x")
    # A restart prefers the MIG instance it had.
    assert place(books.views(), "H200", 1, frozenset({"MIG-2"}), share=parse_share("1g.18gb")).slot_ids == (2,)
    with pytest.raises(InvalidInput, match="the platform has|not enough|gpu_count"):
        check_request(books.views(), "H200", 1)


def test_check_share_names_what_is_wrong():
    books = Books()
    books.add("a", "A100", MPS, 4)
    books.add("b", "T4")
    views = books.views()
    assert offered_shares(views) == ["0.25", "0.5", "0.75"]
    check_request(views, ANY_MODEL, 1, parse_share("0.25"))
    with pytest.raises(InvalidInput) as err:
        check_request(views, ANY_MODEL, 1, parse_share("0.2"))
    assert err.value.field == "gpu_share"
    assert err.value.message == "gpu_share: 0.2 is not a share offered for GPUs here; offered: 0.25, 0.5, 0.75"
    with pytest.raises(InvalidInput) as err:
        check_request(views, "T4", 1, parse_share("0.5"))
    assert "no node shares its GPUs of model T4" in err.value.message
    with pytest.raises(InvalidInput) as err:
        check_request(views, ANY_MODEL, 1, parse_share("1g.18gb"))
    assert "MIG profile 1g.18gb is on no GPU here" in err.value.message
    with pytest.raises(InvalidInput) as err:
        check_request(views, ANY_MODEL, 2, parse_share("0.5"))
    assert err.value.field == "gpu_count"
    with pytest.raises(InvalidInput, match="gpu_share: 0.5 asked, but no node shares"):
        check_request([NodeView("x", {"T4": 1})], ANY_MODEL, 1, parse_share("0.5"))


# ---------------------------------------------------------------- never over-commit

SHARES = ["0.5", "0.25", "0.75", "0.2", "0.4", "0.125", "1g.18gb", "3g.71gb", "2g.35gb"]


@st.composite
def books_and_ops(draw):
    books = Books()
    for node in draw(st.lists(st.sampled_from("abc"), min_size=1, max_size=3, unique=True)):
        for _ in range(draw(st.integers(1, 3))):
            kind = draw(st.sampled_from(["whole", TIME_SLICING, MPS, MIG]))
            model = draw(st.sampled_from(["A100", "H200"]))
            if kind == "whole":
                books.add(node, model)
            elif kind == MIG:
                books.add(node, model, MIG, profiles=draw(st.lists(
                    st.sampled_from(["1g.18gb", "2g.35gb", "3g.71gb"]), min_size=1, max_size=4)))
            else:
                books.add(node, model, kind, draw(st.sampled_from([2, 4, 5, 8, 10])))
    ops = draw(st.lists(st.tuples(st.sampled_from(["share", "whole", "release"]), st.sampled_from(SHARES),
                                  st.integers(1, 3), st.sampled_from(["A100", "H200", ANY_MODEL])), max_size=25))
    return books, ops


@settings(max_examples=300, deadline=None)
@given(books_and_ops())
def test_placement_never_over_commits_a_gpu(case):
    books, ops = case
    holders = []
    for n, (op, share_text, count, model) in enumerate(ops):
        if op == "release":
            if holders:
                books.release(holders.pop(count % len(holders)))
            continue
        share = parse_share(share_text) if op == "share" else None
        try:
            p = place(books.views(), model, 1 if share else count, share=share)
        except Conflict:
            continue
        gpu = {g[1]: g for g in books.gpus}
        node, _, _, gpu_model, mode, slots = gpu[p.gpus[0].id]
        assert p.node == node and model in (ANY_MODEL, gpu_model)
        own = {s for s, _ in slots}
        if share:
            assert len(p.gpus) == 1 and set(p.slot_ids) <= own
            if share.profile:  # one MIG instance of that profile
                assert mode == MIG and [pr for s, pr in slots if s in p.slot_ids] == [share.profile]
            else:  # exactly its part of a split GPU
                assert mode in (TIME_SLICING, MPS) and len(p.slot_ids) == share.fraction * len(slots)
        else:  # whole GPUs: every slot of each, none in MIG mode, one model, one node
            assert len(p.gpus) == count and len({g.model for g in p.gpus}) == 1
            for g in p.gpus:
                g_node, _, _, _, g_mode, g_slots = gpu[g.id]
                assert g_node == p.node and g_mode != MIG
            assert set(p.slot_ids) == {s for g in p.gpus for s, _ in gpu[g.id][5]}
        books.assign(p, f"i{n}")  # raises on any slot held twice
        holders.append(f"i{n}")
        # Invariant: a GPU is either held whole by one holder, or in parts that fit it.
        for _, _, _, _, mode, slots in books.gpus:
            owners = {books.held[s] for s, _ in slots if s in books.held}
            assert len([s for s, _ in slots if s in books.held]) <= len(slots)
            if mode is None:
                assert len(owners) <= 1
