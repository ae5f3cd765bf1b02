"""Auto-stop benchmark: one pass over 1,000 running instances with recorded activity (SSH,
Jupyter, keep-running, a warning standing on some) and every timer on, GPU idle fed from a
recorded one-hour series per instance (240 samples, one GPU), on SQLite or PostgreSQL.

    .venv/bin/python bench/autostop.py                        # SQLite
    .venv/bin/python bench/autostop.py --pg postgresql://postgres@127.0.0.1:54329/postgres  # and PG (scratch DB)

Measured, CPU of this process (time.process_time, median of the repeats): the decision pass
alone (core/autostop.py through services/autostop.Stopper.decisions), its first run (every
instance's whole hour of samples folded in) and its steady runs (one new sample each); the
pass with its database read (Stopper.rows + decisions); and, as the baseline in the same run,
a bare SELECT of the same 1,000 ids. Process-exit checks (an engine exec each) are not in it.
"""

from __future__ import annotations

import argparse
import random
import secrets
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy import insert, select

from dockyard.config import Settings
from dockyard.core.metrics import GpuSample, Sample
from dockyard.core.states import Status
from dockyard.db.models import Image, Instance, Node, User, utcnow
from dockyard.services.autostop import Stopper
from dockyard.services.platform import open_platform

INSTANCES, SAMPLES, STEP_S, REPEATS = 1000, 240, 15.0, 20


def populate(platform, now):
    rng = random.Random(7)
    with platform.sessions.begin() as db:
        db.add(Node(name="local", url="unix:///x", online=True))
        db.add(Image(id=1, name="debian-12", ref="dockyard/debian:bookworm"))
        db.execute(insert(User), [{"id": u + 1, "name": f"u{u}", "password_hash": "x", "is_admin": False}
                                  for u in range(50)])
    ids = [secrets.token_hex(6) for _ in range(INSTANCES)]
    minutes = lambda lo, hi: now - timedelta(minutes=rng.uniform(lo, hi))  # noqa: E731
    with platform.sessions.begin() as db:
        db.execute(insert(Instance), [{
            "id": iid, "owner_id": n % 50 + 1, "name": f"i{n}", "node_name": "local", "image_id": 1,
            "gpu_model": "A100-80GB", "gpu_count": 1, "gpu_milli": 1000, "status": Status.RUNNING, "backend_state": {"container": f"c{n}"},
            "data_disk_gb": 50, "started_at": minutes(60, 600), "last_ssh_at": minutes(0, 20),
            "last_jupyter_at": minutes(0, 20) if n % 2 else None, "auto_stop_kept_at": minutes(0, 60) if n % 5 == 0
            else None, "auto_stop_warned_at": minutes(0, 1) if n % 20 == 0 else None,
            "auto_stop_idle_minutes": 30, "auto_stop_max_minutes": 24 * 60, "auto_stop_gpu_idle_minutes": 30,
            "auto_stop_gpu_idle_percent": 5, "auto_stop_at": now + timedelta(hours=12)} for n, iid in enumerate(ids)])
    return ids


def recorded_series(ids, now_s):
    """A training-like hour per instance: busy stretches (80-100 %) and idle ones (0-3 %)."""
    rng, series = random.Random(11), {}
    for iid in ids:
        samples, busy = [], rng.random() < 0.5
        for k in range(SAMPLES):
            if rng.random() < 0.02:
                busy = not busy
            util = rng.uniform(80, 100) if busy else rng.uniform(0, 3)
            samples.append(Sample(at=now_s - (SAMPLES - k) * STEP_S, cpu_percent=None, memory_used=0, memory_limit=0,
                                  gpus=(GpuSample(uuid=f"GPU-{iid}", util_percent=util),)))
        series[iid] = samples
    return series


def cpu(fn) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def run(label: str, url: str, home: Path) -> None:
    platform = open_platform(Settings(home=home, database_url=url))
    now = utcnow()
    ids = populate(platform, now)
    series = recorded_series(ids, now.timestamp())
    stopper = Stopper(platform, driver=None, gpu_samples=lambda iid: series[iid])

    rows = stopper.rows()
    first = cpu(lambda: stopper.decisions(rows, now))
    due = stopper.decisions(rows, now)
    steady, with_db, baseline = [], [], []

    def select_ids():
        with platform.sessions.begin() as db:
            db.execute(select(Instance.id).where(Instance.status == Status.RUNNING)).all()

    for _ in range(REPEATS):
        for iid in ids:  # one new sample each, as between two passes a minute apart
            s = series[iid][-1]
            series[iid].append(Sample(at=s.at + STEP_S, cpu_percent=None, memory_used=0, memory_limit=0,
                                      gpus=s.gpus))
            del series[iid][0]
        steady.append(cpu(lambda: stopper.decisions(rows, now)))
        with_db.append(cpu(lambda: stopper.decisions(stopper.rows(), now)))
        baseline.append(cpu(select_ids))
    platform.sessions.kw["bind"].dispose()
    ms = lambda xs: f"{statistics.median(xs) * 1000:.1f} ms"  # noqa: E731
    print(f"{label}: {len(rows)} running instances, {len(due)} with something to do (warn, stop or withdraw "
          "a warning)")
    print(f"  decision pass, first (a whole hour of samples each): {first * 1000:.1f} ms CPU")
    print(f"  decision pass, steady:                               {ms(steady)} CPU")
    print(f"  pass with its DB read (rows + decisions):            {ms(with_db)} CPU")
    print(f"  baseline: a SELECT of the same 1,000 ids:            {ms(baseline)} CPU")
    print(f"  pass / baseline: {statistics.median(with_db) / statistics.median(baseline):.1f}x; "
          f"target under 100 ms: {'PASS' if statistics.median(with_db) < 0.1 else 'FAIL'}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pg", help="a PostgreSQL server URL; a scratch database is made in it and dropped")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="dockyard-bench-autostop-"))
    run("SQLite", f"sqlite:///{home / 'bench.db'}", home)
    if args.pg:
        import psycopg

        name = "dy_bench_" + secrets.token_hex(4)
        with psycopg.connect(args.pg, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        try:
            run("PostgreSQL", args.pg.rsplit("/", 1)[0] + "/" + name, home)
        finally:
            with psycopg.connect(args.pg, autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


if __name__ == "__main__":
    main()
