"""`dockyard admin simulate` end to end on a tiny hand-made trace: a real process, its output,
exit codes and the one-line errors for bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

NODES = "sn,cpu_milli,memory_mib,gpu,model\na,32000,131072,4,T4\nb,32000,131072,2,V100\n"
PODS = ("name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec\n"
        "p0,4000,8192,1,1000,\np1,2000,4096,1,500,\np2,2000,4096,1,250,T4\np3,8000,16384,2,1000,V100\n")
SRC = str(Path(__file__).resolve().parents[2] / "src")


def dockyard(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-c", "from dockyard.cli.main import run; run()", *args],
                          capture_output=True, text=True, timeout=60, env=env)


@pytest.fixture
def trace(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "nodes.csv").write_text(NODES)
    (tmp_path / "pods.csv").write_text(PODS)
    return tmp_path / "nodes.csv", tmp_path / "pods.csv"


def test_simulate_prints_json_with_every_step(trace):
    nodes, pods = trace
    done = dockyard("admin", "simulate", "--nodes", str(nodes), "--pods", str(pods), "--policy", "fgd",
                    "--seed", "3", "--load", "1.0", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["policy"], result["seed"]) == ("fgd", 3)
    assert [s["load"] for s in result["steps"]] == [round(0.1 * k, 1) for k in range(1, 11)]
    assert all(0 <= s["unallocated_pct"] <= 100 for s in result["steps"])
    for clock in ("decision_ms", "decision_cpu_ms"):
        assert set(result[clock]) == {"p50", "p99"} and result[clock]["p99"] >= result[clock]["p50"] >= 0
    again = json.loads(dockyard("admin", "simulate", "--nodes", str(nodes), "--pods", str(pods), "--policy", "fgd",
                                "--seed", "3", "--load", "1.0", "--json").stdout)
    assert again["steps"] == result["steps"]


def test_simulate_prints_a_table(trace):
    nodes, pods = trace
    done = dockyard("admin", "simulate", "--nodes", str(nodes), "--pods", str(pods))
    assert done.returncode == 0, done.stderr
    assert "dockyard, seed 42" in done.stdout and "130%" in done.stdout and "decision time: p50" in done.stdout


@pytest.mark.parametrize("pods_text, message", [
    ("name,cpu_milli,num_gpu,gpu_milli\np,1,1,1000\n", "missing column(s) memory_mib"),
    ("cpu_milli,memory_mib,num_gpu,gpu_milli\n1000,1024,-2,1000\n", "row 2, column num_gpu: -2 is out of range"),
    ("cpu_milli,memory_mib,num_gpu,gpu_milli\n1000,lots,1,1000\n", "row 2, column memory_mib: 'lots' is not a whole number"),
])
def test_a_malformed_trace_is_one_line_naming_file_row_and_column(trace, pods_text, message):
    nodes, pods = trace
    pods.write_text(pods_text)
    done = dockyard("admin", "simulate", "--nodes", str(nodes), "--pods", str(pods))
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith(f"error: {pods}: {message}") and done.stderr.count("\n") == 1


def test_bad_options_and_missing_files(trace, tmp_path):
    nodes, pods = trace
    for args, message in [(["--policy", "random"], "--policy: unknown policy 'random'"),
                          (["--load", "0"], "--load: 0.0 is out of range"),
                          (["--nodes", str(tmp_path / "none.csv")], "No such file or directory")]:
        base = {"--nodes": str(nodes), "--pods": str(pods)}
        base.update(dict(zip(args[::2], args[1::2])))
        done = dockyard("admin", "simulate", *[x for kv in base.items() for x in kv])
        assert done.returncode == 1 and message in done.stderr and done.stderr.count("\n") == 1, done.stderr
