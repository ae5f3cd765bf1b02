"""The container an instance gets: its GPUs (or share), disks, limits, environment."""

from __future__ import annotations

from dockyard.core.sharing import MPS_PIPE_DIR, GpuAccess, gpu_access
from dockyard.db.models import Instance, Node
from dockyard.runtimes.base import ContainerSpec
from dockyard.services import volumes
from dockyard.services.allocation import host_share
from dockyard.services.names import container_name, data_volume, mps_daemon_name
from dockyard.services.platform import Platform

DATA_MOUNT = volumes.DATA_MOUNT
GIB = 1024**3


def access_for(instance: Instance, gpus: list, slots: list) -> GpuAccess:
    """What the container of an instance gets of the GPUs (or share) it holds."""
    return gpu_access(
        [g.uuid for g in gpus], instance.gpu_share, instance.gpu_milli, gpus[0].sharing if gpus else None,
        [s.mig_uuid for s in slots if s.mig_uuid], gpus[0].memory_mb if gpus else 0,
        real=bool(gpus) and not gpus[0].simulated)


def disks(platform: Platform, db, instance: Instance) -> dict[str, tuple[int, dict[str, str], str]]:
    """The instance's disks: engine name -> (size in GB, labels, mount point): its own
    data disk (unless a volume is mounted there) and its volumes."""
    found = {v.engine_name: (v.size_gb, volumes.labels(platform, v.id), v.mount_path)
             for v in volumes.mounted(db, instance.id)}
    if DATA_MOUNT not in {path for _, _, path in found.values()}:
        own = {**platform.labels, "dockyard.instance": instance.id}
        found = {data_volume(platform, instance.id): (instance.data_disk_gb, own, DATA_MOUNT), **found}
    return found


def container_spec(platform: Platform, instance: Instance, node: Node, gpus: list, access: GpuAccess, image_ref: str,
                   network: str, mounts: dict[str, tuple[int, dict[str, str], str]], member=None) -> ContainerSpec:
    settings = platform.settings
    uuids = list(access.device_ids)
    # the host's share per GPU, times the GPUs (or the part of one) held; placement counts the same
    cpus, memory = host_share(node, settings).of(instance.gpu_milli if gpus else 0, node.cpus)
    real = bool(gpus) and not gpus[0].simulated
    env = {
        **(instance.env or {}),
        **platform.secret_box.open(instance.secret_env),  # opened only here, never logged
        "DOCKYARD_INSTANCE_ID": instance.id,
        "DOCKYARD_INSTANCE_NAME": instance.name,
        "DOCKYARD_GPU_UUIDS": ",".join(uuids),
        "DOCKYARD_GPUS_PER_NODE": str(len(gpus)),
        **access.env,
        "DOCKYARD_JUPYTER_TOKEN": instance.jupyter_token or "",
        # JupyterLab is served under the platform's proxy path for this instance.
        "DOCKYARD_JUPYTER_BASE_URL": f"/instances/{instance.id}/jupyter/",
    }
    if instance.ssh_password:
        env["DOCKYARD_SSH_PASSWORD"] = instance.ssh_password
    # (docs/distributed.md) NCCL defaults a user's --env overrides. The NVIDIA
    # runtime shows a container exactly its GPUs as 0..N-1, so CUDA_VISIBLE_DEVICES is
    # left unset (host indexes there would be wrong).
    env.setdefault("NCCL_DEBUG", "WARN")
    if member:  # rank, peers and master; eth0 is the cluster network (eth1 may be the swarm's gateway)
        env.update(member.env)
        env.setdefault("NCCL_SOCKET_IFNAME", "eth0")
        env.setdefault("GLOO_SOCKET_IFNAME", "eth0")
    if not real:
        # Simulated GPUs exist only as these values; "void" is the runtime's "none".
        env["NVIDIA_VISIBLE_DEVICES"] = ",".join(uuids) or "void"
    # Any image with a shell works: with no start command the container just stays up.
    command = ["/bin/sh", "-c", instance.command] if instance.command else ["sleep", "infinity"]
    return ContainerSpec(
        name=container_name(platform, instance.id),
        image=image_ref,
        command=command,
        env=env,
        labels={
            **platform.labels,
            "dockyard.instance": instance.id,
            "dockyard.owner": str(instance.owner_id),
            "dockyard.gpus": ",".join(sorted(uuids)),
        },
        hostname=member.hostname if member else instance.name,
        network=network,
        aliases=[member.hostname] if member else [],  # <cluster>-<rank> on its network
        ipv4_address=member.ipv4_address if member else None,
        volumes={**{name: path for name, (_, _, path) in mounts.items()},
                 **({mps_daemon_name(platform, access.mps_gpu): MPS_PIPE_DIR} if access.mps_gpu else {})},
        ipc_mode=f"container:{mps_daemon_name(platform, access.mps_gpu)}" if access.mps_gpu else None,
        ports={22: (settings.ssh_bind, instance.ssh_port)} if instance.ssh_port else {},
        gpu_uuids=uuids,
        real_gpus=real,
        nano_cpus=int(cpus * 1e9),
        memory_bytes=memory,
        pids_limit=settings.pids_limit,
        shm_bytes=int(settings.shm_size_gb * GIB),
        system_disk_gb=settings.system_disk_gb,
    )
