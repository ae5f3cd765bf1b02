"""The billing service on a real database (SQLite, or DOCKYARD_TEST_DB), with chosen times:
random lives of instances, price changes, recharges and crashes; the ledger verifies and
charges exactly the integral of the price over running time."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from dockyard.core import billing as core
from dockyard.core.billing import US, PaymentRequired
from dockyard.core.errors import InvalidInput, NotFound
from dockyard.db.billing_models import Posting, PriceEntry, UsageSegment, Voucher
from dockyard.db.models import Instance, utcnow
from dockyard.services.billing import ledger, prices, settlement, statements, verification
from tests.unit.billing_fixtures import T0, add_instance, event, make_platform, seconds, user


def _db_url():
    server = os.environ.get("DOCKYARD_TEST_DB", "sqlite")
    if server == "sqlite":
        return None
    from pathlib import Path

    from tests.harness import test_database_url

    return test_database_url(Path("/tmp"))


def set_price(platform, kind, price, at, model=""):
    with platform.sessions.begin() as db:
        db.add(PriceEntry(kind=kind, model=model, node="", price=price, effective_from=at, created_by="t"))


class Crash(Exception):
    pass


def settle(platform, now, crash_at: int | None = None, monkeypatch=None):
    """A settlement cycle; with `crash_at`, the n-th ledger write fails inside its
    transaction (rolled back, like a kill -9 before commit) and the cycle dies there."""
    if crash_at is None:
        return settlement.settle(platform, now=now)
    calls = {"n": 0}
    real = ledger.apply

    def failing(db, rows, accounts):
        calls["n"] += 1
        real(db, rows, accounts)
        if calls["n"] == crash_at:
            raise Crash
    monkeypatch.setattr(ledger, "apply", failing)
    try:
        settlement.settle(platform, now=now)
    except Crash:
        pass
    finally:
        monkeypatch.setattr(ledger, "apply", real)


ops = st.lists(st.one_of(
    st.tuples(st.just("create"), st.sampled_from(["A100-80GB", "RTX-4090"]), st.integers(0, 2)),
    st.tuples(st.just("start"), st.integers(0, 5), st.booleans()),
    st.tuples(st.just("stop"), st.integers(0, 5), st.integers(0, 30)),
    st.tuples(st.just("price"), st.sampled_from(["A100-80GB", "RTX-4090", ""]), st.integers(0, 400_000)),
    st.tuples(st.just("recharge"), st.integers(1, 10**6), st.just(0)),
    st.tuples(st.just("settle"), st.one_of(st.none(), st.integers(1, 4)), st.just(0)),
    st.tuples(st.just("wait"), st.integers(1, 400), st.integers(0, 999_999)),
), min_size=3, max_size=25)


def play(platform, steps, monkeypatch, crashes: bool):
    now = T0
    instances: list[str] = []
    for op, a, b in steps:
        now += timedelta(seconds=1, microseconds=137)
        if op == "create":
            instances.append(add_instance(platform, "alice", model=a, count=b, created_at=now))
        elif op == "start" and instances:
            iid = instances[a % len(instances)]
            with platform.sessions.begin() as db:
                status = db.get(Instance, iid).status
            if status in ("creating", "stopped"):
                event(platform, iid, now, "running", no_gpu=b)
        elif op == "stop" and instances:
            iid = instances[a % len(instances)]
            with platform.sessions.begin() as db:
                status = db.get(Instance, iid).status
            if status == "running":
                event(platform, iid, now, "stopping")
                now += timedelta(seconds=b)
                event(platform, iid, now, "stopped")
        elif op == "price":
            kind = "gpu" if a else "no_gpu"
            set_price(platform, kind, b, now, model=a)
        elif op == "recharge":
            with platform.sessions.begin() as db:
                ledger.recharge(db, "alice", core.format_amount(a, 4), by="t", request_id=f"r{now.timestamp()}")
        elif op == "settle":
            settle(platform, now, a if crashes else None, monkeypatch)
        elif op == "wait":
            now += timedelta(seconds=a, microseconds=b)
    # Stop everything, and settle to the end (twice: the second finds nothing new).
    now += seconds(1)
    for iid in instances:
        with platform.sessions.begin() as db:
            status = db.get(Instance, iid).status
        if status == "running":
            event(platform, iid, now, "stopped")
    settlement.settle(platform, now=now + seconds(5))
    settlement.settle(platform, now=now + seconds(6))
    return instances


def ledger_by_run(platform, instances):
    """Usage postings keyed independently of database ids: (instance #, run start, window)."""
    order = {iid: n for n, iid in enumerate(instances)}
    with platform.sessions.begin() as db:
        starts = {s.id: (order[s.instance_id], s.started_at) for s in db.scalars(select(UsageSegment))}
        return {(starts[p.segment_id], p.key.split(":", 2)[2]): p.amount
                for p in db.scalars(select(Posting).where(Posting.kind == "usage"))}


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops)
def test_random_lives_with_crashes_charge_the_integral_and_verify(monkeypatch, steps):
    crashed = make_platform(_db_url(), settle_chunk=1, credit_limit="100000000")
    calm = make_platform(_db_url(), settle_chunk=1000, credit_limit="100000000")
    a = play(crashed, steps, monkeypatch, crashes=True)
    b = play(calm, steps, monkeypatch, crashes=False)
    for platform in (crashed, calm):
        with platform.sessions.begin() as db:
            report = verification.verify(db, platform.settings)
            assert report["ok"], report["problems"]
            rows = prices.price_rows(db)
            segments = list(db.scalars(select(UsageSegment)))
            assert all(s.done for s in segments)
            total = sum(core.segment_total(*prices.segment_steps(rows, s), prices.to_us(s.started_at),
                                           prices.to_us(s.ended_at), prices.GPU_UNIT_US)
                        for s in segments)
            charged = sum(db.scalars(select(Posting.amount).where(Posting.kind == "usage")))
            assert charged == total
    # A replay after crashes posts exactly what an uninterrupted run posts.
    assert ledger_by_run(crashed, a) == ledger_by_run(calm, b)


@pytest.fixture
def platform():
    return make_platform(_db_url())


def test_vouchers_pay_first_and_expire(platform):
    alice = user(platform, "alice")
    set_price(platform, "gpu", 3600 * 10_000, T0 - seconds(10), model="A100-80GB")  # 1 unit per second
    with platform.sessions.begin() as db:
        ledger.recharge(db, "alice", "1000", by="t", request_id="x1")
        voucher = ledger.grant_voucher(db, "alice", "30", utcnow() + timedelta(days=1), by="t")
        # Vouchers count from their grant: move it into the test's past.
        voucher.expires_at = T0 + seconds(200)
    iid = add_instance(platform, "alice")
    event(platform, iid, T0, "running")
    event(platform, iid, T0 + seconds(100), "stopped")
    settlement.settle(platform, now=T0 + seconds(300))
    with platform.sessions.begin() as db:
        view = statements.balance_view(db, platform.settings, alice)
        assert view["balance"] == "930.00" and view["wallet"] == "930.00"  # 30 from the voucher, 70 from the wallet
        assert verification.verify(db, platform.settings)["ok"]
        legs = {p.key: p.amount for p in db.scalars(select(Posting).where(Posting.kind == "usage"))}
        assert sum(legs.values()) == 100 * 10_000


def test_voucher_expiry_returns_what_is_left(platform):
    alice = user(platform, "alice")
    with platform.sessions.begin() as db:
        voucher = ledger.grant_voucher(db, "alice", "5", utcnow() + timedelta(days=1), by="t")
        vid = voucher.id
    with platform.sessions.begin() as db:
        db.get(Voucher, vid).expires_at = T0
    settlement.settle(platform, now=T0 + seconds(10))
    with platform.sessions.begin() as db:
        assert ledger.user_balance(db, alice.id) == 0
        assert verification.verify(db, platform.settings)["ok"]


def test_bad_input_posts_nothing(platform):
    with platform.sessions.begin() as db:
        for amount in ("-5", "abc", "0", "1.000001"):
            with pytest.raises(InvalidInput):
                ledger.recharge(db, "alice", amount, by="t")
        with pytest.raises(NotFound):
            ledger.recharge(db, "mallory", "5", by="t")
        with pytest.raises(InvalidInput, match="past"):
            ledger.grant_voucher(db, "alice", "5", utcnow() - seconds(1), by="t")
        with pytest.raises(InvalidInput, match="unknown GPU model"):
            prices.set_price(db, "gpu", "3", model="H900")
        with pytest.raises(InvalidInput, match="retroactively"):
            prices.set_price(db, "gpu", "3", model="A100-80GB", effective_from=utcnow() - seconds(60))
        with pytest.raises(InvalidInput, match="unknown node"):
            prices.set_price(db, "gpu", "3", model="A100-80GB", node="nowhere")
        with pytest.raises(InvalidInput, match="price kind"):
            prices.set_price(db, "gold", "3")
    with platform.sessions.begin() as db:
        assert statements.postings(db) == []


def test_recharge_retry_with_the_same_id_posts_once(platform):
    alice = user(platform, "alice")
    with platform.sessions.begin() as db:
        ledger.recharge(db, "alice", "5", by="t", request_id="same")
    with platform.sessions.begin() as db:
        ledger.recharge(db, "alice", "5", by="t", request_id="same")
        assert ledger.user_balance(db, alice.id) == 50_000


def test_start_refused_below_the_minimum_then_allowed_after_recharge(platform):
    alice = user(platform, "alice")
    with platform.sessions.begin() as db:
        prices.set_price(db, "gpu", "6", model="A100-80GB")  # 10 minutes of 2 GPUs: 2.00
        with pytest.raises(PaymentRequired) as refused:
            ledger.check_can_afford(db, platform.settings, alice, "A100-80GB", 2000, "local")
        assert "12.00 CNY/hour" in refused.value.message and "0.00 CNY" in refused.value.message
        ledger.check_can_afford(db, platform.settings, alice, "RTX-4090", 1000, "local")  # no price: free
        ledger.recharge(db, "alice", "1.99", by="t")
        with pytest.raises(PaymentRequired):
            ledger.check_can_afford(db, platform.settings, alice, "A100-80GB", 2000, "local")
        ledger.recharge(db, "alice", "0.01", by="t")
        ledger.check_can_afford(db, platform.settings, alice, "A100-80GB", 2000, "local")


def test_empty_wallet_stops_paying_instances_and_warns_before(platform):
    alice = user(platform, "alice")
    now = utcnow()
    with platform.sessions.begin() as db:
        prices.set_price(db, "gpu", "36", model="A100-80GB")  # 0.01 per second
        ledger.recharge(db, "alice", "40", by="t")  # threshold: max(10, one hour = 36)
    iid = add_instance(platform, "alice", created_at=now)
    free = add_instance(platform, "alice", model="RTX-4090", created_at=now)
    event(platform, iid, now, "running")
    event(platform, free, now, "running")
    report = settlement.settle(platform, now=now + seconds(600))  # 6.00 charged, 34 left: below 36
    assert report.warned and not report.stopped
    report = settlement.settle(platform, now=now + seconds(4100))
    assert report.stopped == [iid]  # the free one keeps running
    with platform.sessions.begin() as db:
        assert db.get(Instance, iid).status == "stopping" and db.get(Instance, free).status == "running"
        view = statements.balance_view(db, platform.settings, alice)
        assert view["balance_minor"] <= 0
        assert [n["kind"] for n in view["notices"]] == ["stopped", "low_balance"]
        assert verification.verify(db, platform.settings)["ok"]


def test_billing_off_still_meters_usage():
    platform = make_platform(_db_url(), billing_enabled=False)
    alice = user(platform, "alice")
    set_price(platform, "gpu", 10**6, T0 - seconds(10), model="A100-80GB")
    iid = add_instance(platform, "alice")
    event(platform, iid, T0, "running")
    event(platform, iid, T0 + seconds(90), "stopped")
    settlement.settle(platform, now=T0 + seconds(100))
    with platform.sessions.begin() as db:
        found = statements.postings(db)
        assert {p.amount for p in found} == {0} and sum(p.usage_us for p in found) == 90 * US
        rows = statements.statement(db, platform.settings, alice, "2026-03")["rows"]
        assert rows[0]["seconds"] == 90 and rows[0]["amount"] == "0.00"


@pytest.mark.skipif(_db_url() is None, reason="SQLite's transactions see one snapshot by construction")
def test_verify_reads_one_snapshot_while_others_commit(monkeypatch):
    """A settlement committing between verify's reads (postings, then balances) once showed as
    'balance X but its postings sum to Y' on PostgreSQL: verify_now reads one snapshot."""
    from sqlalchemy import func

    from dockyard.db.models import User

    platform = make_platform(_db_url())
    seen, real = [], verification.verify

    def verify_with_a_commit_between(db, settings):
        seen.append(db.scalar(select(func.count()).select_from(User)))
        with platform.sessions.begin() as other:
            other.add(User(name="carol", password_hash="x"))
        seen.append(db.scalar(select(func.count()).select_from(User)))
        return real(db, settings)

    monkeypatch.setattr(verification, "verify", verify_with_a_commit_between)
    assert verification.verify_now(platform)["ok"]
    assert seen[0] == seen[1] == 2


def test_a_run_is_priced_by_the_mode_its_start_event_records(platform):
    """The driver records with_gpus on the '-> running' event, and settlement prices the run
    by it alone: neither the event's cause nor the instance's no_gpu decides."""
    from dockyard.db.models import InstanceEvent

    set_price(platform, "gpu", 3600 * 10_000, T0 - seconds(10), model="A100-80GB")  # 10000 a second
    set_price(platform, "no_gpu", 3600 * 100, T0 - seconds(10))  # 100 a second
    runs = {  # with_gpus, cause, the instance's no_gpu, billed without GPUs
        "with": (True, "container started without GPUs", True, False),
        "without": (False, "container started with GPUs 0", False, True),
    }
    ids = {}
    for name, (with_gpus, cause, no_gpu, _) in runs.items():
        ids[name] = iid = add_instance(platform, "alice")
        with platform.sessions.begin() as db:
            db.get(Instance, iid).no_gpu = no_gpu
            db.add(InstanceEvent(instance_id=iid, at=T0, from_status="creating", to_status="running", cause=cause,
                                 with_gpus=with_gpus))
        event(platform, iid, T0 + seconds(10), "stopped")
    settlement.settle(platform, now=T0 + seconds(60))
    with platform.sessions.begin() as db:
        for name, (_, _, _, without) in runs.items():
            segment = db.scalars(select(UsageSegment).where(UsageSegment.instance_id == ids[name])).one()
            charged = sum(db.scalars(select(Posting.amount).where(Posting.kind == "usage",
                                                                  Posting.instance_id == ids[name])))
            assert (segment.no_gpu, charged) == (without, 10 * (100 if without else 10_000)), name
        assert verification.verify(db, platform.settings)["ok"]


def test_transition_writes_the_event_fields(platform):
    from dockyard.core.states import Status
    from dockyard.db.models import InstanceEvent
    from dockyard.services.lifecycle import transition

    iid = add_instance(platform, "alice")
    assert transition(platform, iid, Status.CREATING, Status.RUNNING, "container started",
                      event_fields={"with_gpus": True})
    with platform.sessions.begin() as db:
        last = db.scalars(select(InstanceEvent).where(InstanceEvent.instance_id == iid)
                          .order_by(InstanceEvent.id.desc())).first()
        assert (last.to_status, last.with_gpus) == ("running", True)


def test_postings_of_an_unknown_kind_are_refused_by_name(platform):
    from dockyard.core.errors import InvalidInput
    from dockyard.services.billing import statements

    with platform.sessions.begin() as db:
        assert statements.postings(db, kind="usage") == []
        with pytest.raises(InvalidInput, match="'\\\\xa0' is not a posting kind; use one of usage, storage"):
            statements.postings(db, kind="\xa0")
