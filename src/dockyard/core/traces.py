"""Reading a cluster trace in the Alibaba "openb" CSV format (cluster-trace-gpu-v2023): a node
list and a task list. Pure: the caller opens the files and passes their lines."""

from __future__ import annotations

import csv
from typing import Iterable

from dockyard.core.policies.cluster import MILLI, NodeSpec, Request

NODE_COLUMNS = ("sn", "cpu_milli", "memory_mib", "gpu", "model")
POD_COLUMNS = ("cpu_milli", "memory_mib", "num_gpu", "gpu_milli")
MAX_GPUS_PER_NODE = 64


class TraceError(ValueError):
    """A malformed trace file; the message names the file, row and column."""


def _rows(lines: Iterable[str], source: str, required: tuple[str, ...]):
    reader = csv.DictReader(lines)
    missing = [c for c in required if c not in (reader.fieldnames or [])]
    if missing:
        raise TraceError(f"{source}: missing column(s) {', '.join(missing)}")
    for row in reader:
        yield reader.line_num, row


def _int(source: str, line: int, row: dict, column: str, low: int = 0, high: int | None = None) -> int:
    text = (row.get(column) or "").strip()
    try:
        value = int(text)
    except ValueError:
        raise TraceError(f"{source}: row {line}, column {column}: {text!r} is not a whole number") from None
    if value < low or (high is not None and value > high):
        bound = f"{low}..{high}" if high is not None else f"{low} or more"
        raise TraceError(f"{source}: row {line}, column {column}: {value} is out of range ({bound})")
    return value


def parse_nodes(lines: Iterable[str], source: str) -> list[NodeSpec]:
    nodes = []
    for line, row in _rows(lines, source, NODE_COLUMNS):
        gpus = _int(source, line, row, "gpu", 0, MAX_GPUS_PER_NODE)
        model = (row["model"] or "").strip()
        if gpus and not model:
            raise TraceError(f"{source}: row {line}, column model: a node with GPUs needs a model")
        nodes.append(NodeSpec(
            name=(row["sn"] or "").strip() or f"row-{line}", model=model if gpus else "", gpus=gpus,
            cpu_milli=_int(source, line, row, "cpu_milli"), memory_mib=_int(source, line, row, "memory_mib"),
            gpu_memory_mib=_int(source, line, row, "gpu_memory_mib") if row.get("gpu_memory_mib") else 0))
    if not nodes:
        raise TraceError(f"{source}: no nodes")
    return nodes


def parse_pods(lines: Iterable[str], source: str) -> list[Request]:
    pods = []
    for line, row in _rows(lines, source, POD_COLUMNS):
        gpus = _int(source, line, row, "num_gpu", 0, MAX_GPUS_PER_NODE)
        milli = _int(source, line, row, "gpu_milli", 0, MILLI)
        if gpus and not milli:
            raise TraceError(f"{source}: row {line}, column gpu_milli: a task with GPUs needs gpu_milli > 0")
        if gpus > 1 and milli < MILLI:
            raise TraceError(f"{source}: row {line}, column gpu_milli: a share ({milli}) must be of one GPU")
        spec = (row.get("gpu_spec") or "").strip()
        pods.append(Request(
            gpus=gpus, milli=milli if gpus else MILLI,
            gpu_memory_mib=_int(source, line, row, "gpu_memory_mib") if row.get("gpu_memory_mib") else 0,
            models=frozenset(spec.split("|")) if spec else None,
            cpu_milli=_int(source, line, row, "cpu_milli"), memory_mib=_int(source, line, row, "memory_mib")))
    if not pods:
        raise TraceError(f"{source}: no tasks")
    if not any(p.gpus for p in pods):
        raise TraceError(f"{source}: no task asks for a GPU, so no GPU load can be built from it")
    return pods
