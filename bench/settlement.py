"""Billing benchmark: one settlement cycle over 10,000 running instances, and
ledger posting throughput at batch sizes 1, 100 and 8,190, on SQLite and PostgreSQL.

    .venv/bin/python bench/settlement.py                       # SQLite only
    .venv/bin/python bench/settlement.py --pg postgresql://postgres@127.0.0.1:54329/postgres

CPU is time.process_time() of this process (the database server's own CPU is not in it;
SQLite runs in-process, so its CPU is). Figures go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import secrets
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy import insert

from dockyard.config import Settings
from dockyard.core.billing import US
from dockyard.db.billing_models import PriceEntry
from dockyard.db.models import Gpu, Image, Instance, InstanceEvent, Node, User
from dockyard.services.billing import ledger, prices, settlement, verification
from dockyard.services.platform import open_platform


def make(url: str, home: Path):
    platform = open_platform(Settings(home=home, database_url=url, settle_lag_s=0, settle_chunk=10_000))
    return platform


def populate(platform, instances: int, users: int, start):
    with platform.sessions.begin() as db:
        db.add(Node(name="local", url="unix:///x", online=True))
        db.flush()
        db.add(Gpu(node_name="local", index=0, uuid="GPU-bench", model="A100-80GB", memory_mb=1, simulated=True))
        db.add(Image(id=1, name="debian-12", ref="dockyard/debian:bookworm"))
        db.execute(insert(User), [{"id": u + 1, "name": f"u{u}", "password_hash": "x", "is_admin": False,
                                   "created_at": start} for u in range(users)])
        db.add(PriceEntry(kind="gpu", model="A100-80GB", node="", price=36_000_000, effective_from=start - timedelta(days=1)))
    with platform.sessions.begin() as db:
        for u in range(users):
            ledger.recharge(db, f"u{u}", "1000000", by="bench", request_id=f"u{u}")
    ids = [secrets.token_hex(6) for _ in range(instances)]
    with platform.sessions.begin() as db:
        db.execute(insert(Instance), [
            {"id": iid, "owner_id": n % users + 1, "name": f"i{n}", "node_name": "local", "image_id": 1,
             "gpu_model": "A100-80GB", "gpu_count": 1 + n % 4, "status": "running", "no_gpu": False, "env": {},
             "data_disk_gb": 50, "container_gpus": [], "created_at": start, "updated_at": start}
            for n, iid in enumerate(ids)])
        db.execute(insert(InstanceEvent), [
            {"instance_id": iid, "at": start, "from_status": "starting", "to_status": "running",
             "cause": "container started with GPUs 0", "with_gpus": True} for iid in ids])


def cycle(platform, now) -> tuple[float, float, settlement.SettleReport]:
    cpu, wall = time.process_time(), time.perf_counter()
    report = settlement.settle(platform, now=now)
    return time.process_time() - cpu, time.perf_counter() - wall, report


def bench_settlement(platform, instances: int) -> dict:
    minute = int(time.time()) // 60 * 60 - 600
    base = prices.from_us(minute * US)
    populate(platform, instances, 100, base - timedelta(seconds=30))
    first = cycle(platform, base + timedelta(seconds=1))  # derives 10,000 runs, posts their first windows
    steady = cycle(platform, base + timedelta(seconds=61))  # one new minute each: the every-minute cycle
    idle = cycle(platform, base + timedelta(seconds=62))  # nothing new to post
    with platform.sessions.begin() as db:
        t = time.process_time()
        report = verification.verify(db, platform.settings)
        verify_cpu = time.process_time() - t
    assert report["ok"], report["problems"][:5]
    assert steady[2].postings == instances, steady[2]
    return {"first": first, "steady": steady, "idle": idle, "verify_cpu": verify_cpu, "postings": report["postings"]}


def bench_postings(platform, batch: int, total: int) -> tuple[float, float]:
    accounts = {**ledger.system_accounts(), "user:1:wallet": ("wallet", 1)}
    tag = secrets.token_hex(3)
    cpu, wall = time.process_time(), time.perf_counter()
    for start in range(0, total, batch):
        rows = [ledger.posting_row(f"bench:{tag}:{n}", "recharge", ledger.RECHARGES, "user:1:wallet", 1, 1)
                for n in range(start, min(total, start + batch))]
        with platform.sessions.begin() as db:
            ledger.apply(db, rows, accounts)
    return total / (time.perf_counter() - wall), total / (time.process_time() - cpu)


def run(label: str, url: str, home: Path, instances: int) -> None:
    platform = make(url, home)
    result = bench_settlement(platform, instances)
    print(f"\n== {label}: settlement of {instances} running instances")
    for name in ("first", "steady", "idle"):
        cpu, wall, report = result[name]
        print(f"  {name:>6} cycle: {cpu:.3f} s CPU, {wall:.3f} s wall, {report.postings} postings, "
              f"{report.opened} runs opened")
    print(f"  verify of {result['postings']} postings: {result['verify_cpu']:.3f} s CPU")
    print(f"== {label}: posting throughput (one transaction per batch)")
    for batch, total in ((1, 2000), (100, 20_000), (8190, 8190 * 5)):
        wall_rate, cpu_rate = bench_postings(platform, batch, total)
        print(f"  batch {batch:>5}: {wall_rate:>9,.0f} postings/s wall, {cpu_rate:>9,.0f} postings/s per CPU second")
    with platform.sessions.begin() as db:
        assert verification.verify(db, platform.settings)["ok"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--pg", help="a PostgreSQL server URL; a scratch database is made in it and dropped")
    parser.add_argument("--no-sqlite", action="store_true")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="dockyard-bench-"))
    if not args.no_sqlite:
        run("SQLite", f"sqlite:///{home / 'bench.db'}", home, args.instances)
    if args.pg:
        import psycopg

        name = "dy_bench_" + secrets.token_hex(4)
        with psycopg.connect(args.pg, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        try:
            run("PostgreSQL", args.pg.rsplit("/", 1)[0] + "/" + name, home, args.instances)
        finally:
            from sqlalchemy.orm import close_all_sessions

            close_all_sessions()
            import gc

            gc.collect()
            with psycopg.connect(args.pg, autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


if __name__ == "__main__":
    main()
