"""The trace reader and the simulator (pure parts; the CLI is tested in test_cli_simulate.py)."""

from __future__ import annotations

import pytest

from dockyard.core.simulation import arrivals, simulate
from dockyard.core.traces import TraceError, parse_nodes, parse_pods

NODES = """sn,cpu_milli,memory_mib,gpu,model
a,32000,131072,4,T4
b,32000,131072,2,V100
c,16000,65536,0,
"""
PODS = """name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec
p0,4000,8192,1,1000,
p1,2000,4096,1,500,
p2,2000,4096,1,250,T4
p3,8000,16384,2,1000,V100
p4,1000,1024,0,0,
"""


def lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def test_reads_nodes_and_tasks():
    nodes = parse_nodes(lines(NODES), "nodes.csv")
    assert [(n.name, n.model, n.gpus) for n in nodes] == [("a", "T4", 4), ("b", "V100", 2), ("c", "", 0)]
    pods = parse_pods(lines(PODS), "pods.csv")
    assert [(p.gpus, p.milli, p.models) for p in pods] == [
        (1, 1000, None), (1, 500, None), (1, 250, frozenset({"T4"})), (2, 1000, frozenset({"V100"})), (0, 1000, None)]


@pytest.mark.parametrize("text, message", [
    ("sn,cpu_milli,gpu,model\na,1,1,T4\n", "nodes.csv: missing column(s) memory_mib"),
    ("sn,cpu_milli,memory_mib,gpu,model\na,-5,1,1,T4\n", "nodes.csv: row 2, column cpu_milli: -5 is out of range"),
    ("sn,cpu_milli,memory_mib,gpu,model\na,1,1,two,T4\n", "nodes.csv: row 2, column gpu: 'two' is not a whole number"),
    ("sn,cpu_milli,memory_mib,gpu,model\na,1,1,2,\n", "nodes.csv: row 2, column model: a node with GPUs needs a model"),
])
def test_malformed_node_lists_name_the_file_row_and_column(text, message):
    with pytest.raises(TraceError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        parse_nodes(lines(text), "nodes.csv")


@pytest.mark.parametrize("row, message", [
    ("1000,1024,1,1500", "row 2, column gpu_milli: 1500 is out of range (0..1000)"),
    ("1000,1024,2,500", "row 2, column gpu_milli: a share (500) must be of one GPU"),
    ("1000,-1,1,500", "row 2, column memory_mib: -1 is out of range (0 or more)"),
    ("1000,1024,1,0.5", "row 2, column gpu_milli: '0.5' is not a whole number"),
    ("1000,1024,0,0\n", "no task asks for a GPU, so no GPU load can be built from it"),
])
def test_malformed_task_lists_name_the_file_row_and_column(row, message):
    with pytest.raises(TraceError) as caught:
        parse_pods(lines("cpu_milli,memory_mib,num_gpu,gpu_milli\n" + row + "\n"), "pods.csv")
    assert str(caught.value) == "pods.csv: " + message


def test_arrivals_reach_the_load_and_depend_on_the_seed():
    pods = parse_pods(lines(PODS), "pods.csv")
    tasks = arrivals(pods, 6000, 1.3, seed=7)
    total = sum(t.gpu_milli_total for t in tasks)
    assert total >= 7800 and total - max(t.gpu_milli_total for t in tasks) < 7800
    assert tasks == arrivals(pods, 6000, 1.3, seed=7)
    assert tasks != arrivals(pods, 6000, 1.3, seed=8)


@pytest.mark.parametrize("policy", ["first-fit", "best-fit", "fgd", "dockyard"])
def test_the_simulator_is_deterministic_for_a_seed(policy):
    nodes, pods = parse_nodes(lines(NODES), "n"), parse_pods(lines(PODS), "p")
    first, again = simulate(nodes, pods, policy, 42), simulate(nodes, pods, policy, 42)
    assert first.steps == again.steps and (first.placed, first.failed) == (again.placed, again.failed)
    assert [s.load for s in first.steps] == [round(0.1 * k, 1) for k in range(1, 14)]
    unallocated = [s.unallocated_pct for s in first.steps]
    assert unallocated == sorted(unallocated, reverse=True) and 0 <= unallocated[-1] < 100
