"""A tiny DistributedDataParallel job: an all-reduce, then a few training steps.

Launched by torchrun on one instance or on every member of a cluster:

    torchrun --standalone --nproc_per_node=gpu train_ddp.py                 # one instance
    torchrun --nnodes=$NNODES --node_rank=$NODE_RANK --master_addr=$MASTER_ADDR \
             --master_port=$MASTER_PORT --nproc_per_node=$NPROC_PER_NODE train_ddp.py  # a cluster

--backend: nccl (GPUs), gloo (CPU), or auto (nccl when CUDA is there). Every rank prints
one JSON line: its rank, the all-reduce result and a checksum of the trained weights,
which must be the same on every rank.
"""

import argparse
import gc
import json
import os
import socket

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", default="auto", choices=["auto", "nccl", "gloo"])
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    backend = args.backend if args.backend != "auto" else ("nccl" if torch.cuda.is_available() else "gloo")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    dist.init_process_group(backend)
    rank, world = dist.get_rank(), dist.get_world_size()

    # All-reduce: every rank contributes rank + 1; the sum is world * (world + 1) / 2.
    value = torch.tensor([float(rank + 1)], device=device)
    dist.all_reduce(value)

    # DDP: a tiny model, the same seed everywhere, a different batch per rank.
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1)).to(device)
    ddp = DistributedDataParallel(model, device_ids=[local_rank] if backend == "nccl" else None)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1)
    generator = torch.Generator().manual_seed(1000 + rank)
    for _ in range(args.steps):
        x = torch.randn(32, 8, generator=generator).to(device)
        y = x.sum(dim=1, keepdim=True)
        loss = torch.nn.functional.mse_loss(ddp(x), y)
        optimizer.zero_grad()
        loss.backward()  # gradients are averaged across ranks here
        optimizer.step()
    checksum = sum(p.detach().double().sum().item() for p in model.parameters())

    print(json.dumps({
        "rank": rank, "world": world, "local_rank": local_rank, "host": socket.gethostname(),
        "backend": backend, "allreduce": value.item(), "expected": world * (world + 1) / 2,
        "checksum": round(checksum, 6), "loss": round(loss.item(), 6),
        "nccl": ".".join(map(str, torch.cuda.nccl.version())) if backend == "nccl" else None,
        "device": torch.cuda.get_device_name(local_rank) if backend == "nccl" else "cpu",
    }), flush=True)
    # DDP's reducer holds the process group: drop it (and the graph that references it)
    # first, so the group and its worker threads end inside destroy_process_group, not
    # during interpreter shutdown, where gloo's threads can abort the process.
    del ddp, optimizer, loss
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
