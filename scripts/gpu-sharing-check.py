#!/usr/bin/env python3
"""Check GPU sharing on a machine with an NVIDIA GPU (no Docker needed): MIG discovery as
Dockyard does it, and whether an MPS memory limit holds. Prints what it saw as JSON.

    PYTHONPATH=src python3 scripts/gpu-sharing-check.py [--gpu 0] [--limit-mb 2048]

It changes no GPU setting: MIG mode and MIG instances are only read (create them with
`nvidia-smi mig` beforehand to see them found). The MPS part starts a private MPS control
daemon on one GPU (its own pipe and log directories, stopped at the end), then runs CUDA
clients through libcuda (ctypes, no PyTorch needed) that report the memory they see and
try allocations below and above the limit:

1. the limit in the client's environment (CUDA_MPS_PINNED_DEVICE_MEM_LIMIT), as Dockyard
   sets it for an MPS share;
2. the daemon's default limit (set_default_device_pinned_mem_limit) with the client asking
   for more in its environment: whether a client can raise the limit it was given.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

MIB = 1024 * 1024
STEP_TIMEOUT_S = 60


def run(command: list[str], env: dict | None = None, input: str | None = None) -> dict:
    try:
        done = subprocess.run(command, env=env, input=input, capture_output=True, text=True, timeout=STEP_TIMEOUT_S)
        return {"rc": done.returncode, "out": done.stdout[-4000:], "err": done.stderr[-2000:]}
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"rc": None, "error": repr(exc)}


# ---- a CUDA client through libcuda --------------------------------------------------------


def client(sizes_mb: list[int], hold_s: float) -> dict:
    """Make a context on device 0, report free/total memory, try each allocation (kept)."""
    cuda = ctypes.CDLL("libcuda.so.1")
    report: dict = {"env_limit": os.environ.get("CUDA_MPS_PINNED_DEVICE_MEM_LIMIT")}

    def check(name: str, code: int) -> int:
        if code != 0:
            text = ctypes.c_char_p()
            cuda.cuGetErrorName(code, ctypes.byref(text))
            report.setdefault("errors", []).append(f"{name}: {code} {text.value.decode() if text.value else ''}")
        return code

    if check("cuInit", cuda.cuInit(0)):
        return report
    device, context = ctypes.c_int(), ctypes.c_void_p()
    check("cuDeviceGet", cuda.cuDeviceGet(ctypes.byref(device), 0))
    if check("cuCtxCreate", cuda.cuCtxCreate_v2(ctypes.byref(context), 0, device)):
        return report
    free, total = ctypes.c_size_t(), ctypes.c_size_t()
    check("cuMemGetInfo", cuda.cuMemGetInfo_v2(ctypes.byref(free), ctypes.byref(total)))
    report["free_mb"], report["total_mb"] = free.value // MIB, total.value // MIB
    report["allocations"] = []
    for size in sizes_mb:
        pointer = ctypes.c_uint64()
        code = cuda.cuMemAlloc_v2(ctypes.byref(pointer), ctypes.c_size_t(size * MIB))
        report["allocations"].append({"mb": size, "ok": code == 0, "code": code})
        if code == 0:
            cuda.cuMemFree_v2(pointer)
    time.sleep(hold_s)
    cuda.cuCtxDestroy_v2(context)
    return report


def run_client(env: dict, sizes_mb: list[int]) -> dict:
    found = run([sys.executable, __file__, "--client", ",".join(map(str, sizes_mb))], env=env)
    try:
        return json.loads(found["out"].strip().splitlines()[-1])
    except (KeyError, IndexError, ValueError):
        return {"failed": found}


# ---- MPS ------------------------------------------------------------------------------------


def mps_check(gpu: str, limit_mb: int) -> dict:
    if not shutil.which("nvidia-cuda-mps-control"):
        return {"skipped": "nvidia-cuda-mps-control is not installed"}
    root = tempfile.mkdtemp(prefix="dockyard-mps-")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpu, "CUDA_MPS_PIPE_DIRECTORY": f"{root}/pipe",
           "CUDA_MPS_LOG_DIRECTORY": f"{root}/log"}
    os.makedirs(env["CUDA_MPS_PIPE_DIRECTORY"]), os.makedirs(env["CUDA_MPS_LOG_DIRECTORY"])
    result: dict = {"limit_mb": limit_mb, "daemon": run(["nvidia-cuda-mps-control", "-d"], env=env)}
    try:
        time.sleep(1)
        below, above = limit_mb // 2, limit_mb * 3 // 2
        result["client_without_limit"] = run_client(env, [above])
        limited = {**env, "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT": f"0={limit_mb}M"}
        result["client_with_env_limit"] = run_client(limited, [below, above])
        result["nvidia_smi_apps"] = run(["nvidia-smi", "--query-compute-apps=pid,process_name,used_memory",
                                         "--format=csv"])
        result["set_default_limit"] = run(["nvidia-cuda-mps-control"], env=env,
                                          input=f"set_default_device_pinned_mem_limit 0 {limit_mb}M\n")
        # A new server picks the default up: shut the current one down first.
        result["servers"] = run(["nvidia-cuda-mps-control"], env=env, input="get_server_list\n")
        for pid in result["servers"].get("out", "").split():
            run(["nvidia-cuda-mps-control"], env=env, input=f"shutdown_server {pid} -f\n")
        time.sleep(1)
        raised = {**env, "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT": f"0={limit_mb * 4}M"}
        result["client_raising_default_limit"] = run_client(raised, [above])
        result["client_under_default_limit"] = run_client(env, [below, above])
    finally:
        result["quit"] = run(["nvidia-cuda-mps-control"], env=env, input="quit\n")
        time.sleep(1)
        result["server_log_tail"] = open(f"{root}/log/server.log").read()[-2000:] \
            if os.path.exists(f"{root}/log/server.log") else None
        shutil.rmtree(root, ignore_errors=True)
    return result


# ---- MIG --------------------------------------------------------------------------------------


def mig_check() -> dict:
    from dockyard.runtimes import gpu_discovery

    seen: dict = {}
    try:
        seen["nvml"] = [{"index": g.index, "uuid": g.uuid, "model": g.model, "memory_mb": g.memory_mb,
                         "mig": [m.__dict__ for m in g.mig]} for g in gpu_discovery.discover_nvml()]
    except Exception as exc:  # pynvml missing or failing: say so, go on
        seen["nvml_error"] = repr(exc)
    seen["mig_mode"] = run(["nvidia-smi", "--query-gpu=index,mig.mode.current,mig.mode.pending", "--format=csv"])
    script = gpu_discovery.discovery_script()[2]
    found = run(["/bin/sh", "-c", script])
    seen["nvidia_smi_discovery"] = found
    if found.get("rc") == 0:
        seen["parsed"] = [{"uuid": g.uuid, "model": g.model, "mig": [m.__dict__ for m in g.mig]}
                          for g in gpu_discovery.parse_discovery(found["out"])]
    seen["nvidia_smi"] = run(["nvidia-smi"])
    return seen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", default="0", help="the GPU (index or UUID) the MPS check uses")
    parser.add_argument("--limit-mb", type=int, default=2048, help="the MPS memory limit to try")
    parser.add_argument("--client", help=argparse.SUPPRESS)  # internal: one CUDA client
    args = parser.parse_args()
    if args.client is not None:
        print(json.dumps(client([int(s) for s in args.client.split(",") if s], hold_s=0.5)))
        return 0
    print(json.dumps({"mig": mig_check(), "mps": mps_check(args.gpu, args.limit_mb)}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
