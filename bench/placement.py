"""Every placement policy on every openb trace (Alibaba GPU trace 2023), the FGD paper's method:
tasks drawn with replacement to 130% of the cluster's GPU capacity, shuffled per seed, placed
one at a time with no departures. Prints, per trace and policy, the mean over the seeds of the
unallocated share of GPU capacity at 100% and 130% arrived load, and the decision time (mean
over the seeds of each run's p50 and p99, wall clock and CPU time of the deciding thread).

    .venv/bin/python bench/placement.py [--data DIR] [--seeds 42-51] [--jobs 2]

DIR defaults to ../shared/data/alibaba-gpu-trace-2023 beside the repository."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # runnable without installing

from dockyard.core.policies import POLICY_NAMES  # noqa: E402
from dockyard.core.simulation import simulate  # noqa: E402
from dockyard.core.traces import parse_nodes, parse_pods  # noqa: E402

TRACES = ("default", "multigpu50", "gpushare100", "gpuspec33")
NODES = "openb_node_list_gpu_node.csv"
REPO = Path(__file__).resolve().parents[1]
# ../shared beside the main checkout (a worktree under /work/wt/NAME finds it two levels up)
DATA_CANDIDATES = [up / "shared" / "data" / "alibaba-gpu-trace-2023" for up in (REPO.parent, REPO.parent.parent)]
DEFAULT_DATA = next((d for d in DATA_CANDIDATES if d.exists()), DATA_CANDIDATES[0])
# the artifact's published means at 100% load on the default trace; FGD at 130% on the others
PAPER = {("default", "fgd"): "4.77 @100%", ("default", "best-fit"): "7.14 @100%",
         ("multigpu50", "fgd"): "2.82 @130%", ("gpushare100", "fgd"): "13.10 @130%"}


def run_one(args: tuple[Path, str, str, int]) -> tuple:
    data, trace, policy, seed = args
    nodes = parse_nodes(open(data / NODES, newline=""), NODES)
    pods = parse_pods(open(data / f"openb_pod_list_{trace}.csv", newline=""), trace)
    result = simulate(nodes, pods, policy, seed, 1.3)
    at = {round(s.load, 1): s.unallocated_pct for s in result.steps}
    return (trace, policy, seed, at[1.0], at[1.3], result.decision_ms_p50, result.decision_ms_p99,
            result.decision_cpu_ms_p50, result.decision_cpu_ms_p99)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seeds", default="42-51", help="first-last")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--traces", default=",".join(TRACES))
    parser.add_argument("--policies", default=",".join(POLICY_NAMES))
    args = parser.parse_args()
    if not (args.data / NODES).exists():
        print(f"error: trace data not found in {args.data} (give --data DIR)", file=sys.stderr)
        return 1
    first, last = (int(x) for x in args.seeds.split("-"))
    traces, policies = args.traces.split(","), args.policies.split(",")
    jobs = [(args.data, t, p, s) for t in traces for p in policies for s in range(first, last + 1)]
    started = time.monotonic()
    with ProcessPoolExecutor(args.jobs) as pool:
        results = list(pool.map(run_one, jobs))
    print(f"{len(jobs)} runs, seeds {first}-{last}, {time.monotonic() - started:.0f} s\n")
    print("| trace | policy | unallocated @100% | unallocated @130% | decision p50 / p99 ms (wall) "
          "| decision p50 / p99 ms (CPU) | paper |")
    print("|---|---|---:|---:|---:|---:|---|")
    for t in traces:
        for p in policies:
            rows = [r for r in results if r[0] == t and r[1] == p]
            mean = lambda i: statistics.mean(r[i] for r in rows)  # noqa: E731
            print(f"| {t} | {p} | {mean(3):.2f}% | {mean(4):.2f}% | {mean(5):.3f} / {mean(6):.3f} "
                  f"| {mean(7):.3f} / {mean(8):.3f} | {PAPER.get((t, p), '')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
