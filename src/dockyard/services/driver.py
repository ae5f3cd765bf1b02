"""Drives each instance's containers toward the status the database records.

Every step is idempotent and re-reads the database first, so the same code finishes
the job after a crash (the reconciler calls `drive` for every transitional instance).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from dockyard.core import mirrors as core_mirrors
from dockyard.core.sharing import MPS_PIPE_DIR, GpuAccess, gpu_access
from dockyard.core.states import Status
from dockyard.db.models import Image, Instance, InstanceEvent, Node, utcnow
from dockyard.runtimes.base import ContainerGone, ContainerSpec, PortTaken, Runtime, RuntimeError_
from dockyard.services import inside, mirrors, volumes
from dockyard.services.allocation import assigned_gpus, assigned_slots, free_ssh_port, host_share
from dockyard.services.lifecycle import transition
from dockyard.services.keys import authorized_keys
from dockyard.services.platform import Platform

log = logging.getLogger(__name__)
DATA_MOUNT = volumes.DATA_MOUNT
GIB = 1024**3


def container_name(platform: Platform, instance_id: str) -> str:
    return f"dy-{platform.deployment}-{instance_id}"


def data_volume(platform: Platform, instance_id: str) -> str:
    return f"dy-{platform.deployment}-{instance_id}-data"


def user_network(platform: Platform, owner_id: int) -> str:
    return f"dy-{platform.deployment}-user{owner_id}"


def mps_daemon_name(platform: Platform, gpu_uuid: str) -> str:
    """One MPS daemon container (and pipe volume) per shared GPU and deployment."""
    return f"dy-{platform.deployment}-mps-{gpu_uuid.removeprefix('GPU-')}"


def access_for(instance: Instance, gpus: list, slots: list) -> GpuAccess:
    """What the container of an instance gets of the GPUs (or share) it holds."""
    return gpu_access(
        [g.uuid for g in gpus], instance.gpu_share, instance.gpu_milli, gpus[0].sharing if gpus else None,
        [s.mig_uuid for s in slots if s.mig_uuid], gpus[0].memory_mb if gpus else 0,
        real=bool(gpus) and not gpus[0].simulated)


class Driver:
    def __init__(self, platform: Platform):
        self.platform = platform
        self.executor = ThreadPoolExecutor(max_workers=platform.settings.workers, thread_name_prefix="drive")
        # Self-tests run a program of the image: on their own threads, never the driver's.
        self.checks = ThreadPoolExecutor(max_workers=4, thread_name_prefix="check")
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        # SSH ports found held by other programs, per node: not handed out again.
        self._taken_ports: dict[str, set[int]] = {}

    def kick(self, instance_id: str) -> None:
        """Drive an instance in the background, now."""
        self.executor.submit(self.drive, instance_id)

    def busy(self, instance_id: str) -> bool:
        lock = self._locks.get(instance_id)
        return bool(lock and lock.locked())

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.checks.shutdown(wait=False, cancel_futures=True)

    def _lock(self, instance_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(instance_id, threading.Lock())

    def hold(self, instance_id: str) -> threading.Lock:
        """Keep `drive` off an instance about to be made (a clone, until its disks are
        copied): kicks and the reconciler pass it by while held. `drive_prepared` lets go."""
        lock = self._lock(instance_id)
        lock.acquire()
        return lock

    def drive_prepared(self, instance_id: str, lock: threading.Lock, prepare: Callable[[], None]) -> None:
        """Run `prepare` on a held instance (failing it with the reason if that fails),
        then drive it as usual and let go of it."""
        try:
            try:
                prepare()
            except Exception as exc:  # its release removes whatever was half made
                transition(self.platform, instance_id, Status.CREATING, Status.FAILED, str(exc))
        finally:
            self._drive_held(instance_id, lock)

    def drive(self, instance_id: str) -> None:
        lock = self._lock(instance_id)
        if not lock.acquire(blocking=False):
            return  # someone is driving it; they re-read the status when they finish
        self._drive_held(instance_id, lock)

    def _drive_held(self, instance_id: str, lock: threading.Lock) -> None:
        try:
            for _ in range(10):  # a step may leave it in another transitional status
                with self.platform.sessions.begin() as db:
                    instance = db.get(Instance, instance_id)
                    status = Status(instance.status)
                step = {
                    Status.CREATING: self._run,
                    Status.STARTING: self._run,
                    Status.STOPPING: self._stop,
                    Status.RELEASING: self._release,
                }.get(status)
                if step is None:
                    return
                try:
                    step(instance, status)
                except RuntimeError_ as exc:
                    if not self._fail(instance, status, exc):
                        return  # left as it is: the reconciler's next pass tries again
        except Exception:
            # An engine that cannot be reached: leave the status, the reconciler retries.
            log.exception("driving instance %s failed; will retry", instance_id)
        finally:
            lock.release()

    # ---- steps ------------------------------------------------------------------------

    def _run(self, instance: Instance, status: Status) -> None:
        """creating/starting -> running: make sure a container with exactly the assigned
        GPUs exists over this instance's system disk, and start it."""
        runtime = self.platform.runtime(instance.node_name)
        with self.platform.sessions.begin() as db:
            gpus = assigned_gpus(db, instance.id)
            access = access_for(instance, gpus, assigned_slots(db, instance.id))
            image = db.get(Image, instance.image_id)
            node = db.get(Node, instance.node_name)
            mounts = self._disks(db, instance)
        # At every start: a disk is made if missing and mounted again after a reboot.
        for name, (size_gb, disk_labels, _) in mounts.items():
            runtime.ensure_volume(name, disk_labels, size_gb)
        uuids = sorted(access.device_ids)
        container = runtime.inspect(instance.container_id) if instance.container_id else None
        if instance.container_id and container is None:
            raise ContainerGone("the instance's container (its system disk) vanished from the node")
        if container is None:
            # Made by a process killed before it recorded the id: adopt it, recorded, or
            # the reconciler would judge the running instance's container vanished.
            container = runtime.inspect(container_name(self.platform, instance.id))
            if container is not None and container.labels.get("dockyard.gpus") != ",".join(uuids):
                runtime.remove(container.id)
                container = None
            elif container is not None:
                with self.platform.sessions.begin() as db:
                    row = db.get(Instance, instance.id)
                    row.container_id, row.container_gpus = container.id, uuids
        elif sorted(instance.container_gpus or []) != uuids:
            # Docker fixes devices at create: keep the system disk as an image, recreate.
            self._save_system_disk(runtime, instance, container.id)
            container = None
        if container is None:
            base = instance.sysdisk_image or image.ref
            runtime.ensure_image(base)
            member = None
            if instance.cluster_id:  # a cluster member joins its cluster's own network
                from dockyard.services import clusters
                member = clusters.member_setup(self.platform, instance)
                network = member.network
            else:
                network = runtime.ensure_network(user_network(self.platform, instance.owner_id), self.platform.labels)
            if access.mps_gpu:  # a time-sliced share under MPS: its GPU's daemon first
                daemon = mps_daemon_name(self.platform, access.mps_gpu)
                runtime.ensure_mps_daemon(daemon, access.mps_gpu, self.platform.settings.gpu_probe_image, daemon,
                                          self.platform.labels)
            container_id = runtime.create(self._spec(instance, node, gpus, access, base, network, mounts, member))
            if member:  # the MPI/DeepSpeed hostfile, before anything in it runs
                clusters.write_hostfile(runtime, container_id, member)
            with self.platform.sessions.begin() as db:
                row = db.get(Instance, instance.id)
                row.container_id, row.container_gpus = container_id, uuids
        else:
            container_id = container.id
        if status == Status.CREATING and not instance.sysdisk_image:
            self._write_mirrors(runtime, container_id, instance)  # idempotent: a retry rewrites them
        self._write_start_files(runtime, container_id, instance)
        try:
            runtime.start(container_id)
        except PortTaken:
            if not instance.ssh_port:
                raise
            self._move_ssh_port(runtime, instance, status, container_id)
            return  # the drive loop's next pass makes the container on the new port
        info = runtime.inspect(container_id)
        if info is None or not info.running:
            raise RuntimeError_(f"the container exited at once (exit code {info.exit_code if info else '?'})")
        cause = "container started" + (f" with GPUs {', '.join(str(g.index) for g in gpus)}" if gpus else " without GPUs")
        transition(self.platform, instance.id, status, Status.RUNNING, cause, started_at=utcnow(),
                   event_fields={"with_gpus": bool(gpus)})
        if image.framework:  # images of our family carry the self-test
            self.checks.submit(self.check_environment, instance.id)
        self._drop_old_system_disks(runtime, instance.id)

    def _move_ssh_port(self, runtime: Runtime, instance: Instance, status: Status, container_id: str) -> None:
        """Another program holds the instance's SSH port on the node: take another port and
        make the container again (Docker fixes published ports at create), keeping the
        system disk of an instance that has run before."""
        taken = self._taken_ports.setdefault(instance.node_name, set())
        taken.add(instance.ssh_port)
        if status == Status.CREATING:  # never ran: nothing on its system disk yet
            with self.platform.sessions.begin() as db:
                row = db.get(Instance, instance.id)
                row.container_id, row.container_gpus = None, []
            runtime.remove(container_id)
        else:
            self._save_system_disk(runtime, instance, container_id)
        with self.platform.sessions.begin() as db:
            row = db.get(Instance, instance.id)
            old, row.ssh_port = row.ssh_port, free_ssh_port(db, self.platform, row.node_name, exclude=taken)
            db.add(InstanceEvent(instance_id=row.id, from_status=row.status, to_status=row.status,
                                 cause=f"SSH port {old} is held by another program on the node: moved to {row.ssh_port}"))
        log.warning("instance %s: SSH port %s taken on %s, moved to another", instance.id, old, instance.node_name)

    def check_environment(self, instance_id: str) -> dict | None:
        """Run the image's self-test (dockyard-check) and keep its result on the instance."""
        with self.platform.sessions.begin() as db:
            instance = db.get(Instance, instance_id)
        if instance.status != Status.RUNNING or not instance.container_id:
            return None
        try:
            # The image's own program: bounded, since a tenant may have replaced it.
            code, output = self.platform.runtime(instance.node_name).exec(
                instance.container_id, ["dockyard-check"], timeout_s=self.platform.settings.check_timeout_s, max_bytes=256 * 1024)
            result = json.loads(output.decode(errors="replace").strip().splitlines()[-1])
            if not isinstance(result, dict):
                raise ValueError("not a JSON object")
        except (RuntimeError_, ValueError, IndexError) as exc:
            result = {"ok": False, "error": f"dockyard-check did not run: {exc}"}
        result["checked_at"] = utcnow().isoformat()
        with self.platform.sessions.begin() as db:
            db.get(Instance, instance_id).env_check = result
        return result

    def _write_mirrors(self, runtime: Runtime, container_id: str, instance: Instance) -> None:
        """The site's package mirrors and the owner's additions, as files in the new
        container before its first start. Failing to write them is an event, not a failure."""
        with self.platform.sessions.begin() as db:
            site, user = mirrors.for_owner(db, instance.owner_id)
        if site.is_empty() and user.is_empty():
            return
        try:
            release = runtime.read_file(container_id, "/etc/os-release")
            if release is None:  # usually a link to /usr/lib/os-release
                release = runtime.read_file(container_id, "/usr/lib/os-release")
            os_release = core_mirrors.parse_os_release(release.decode(errors="replace")) if release else None
            # Paths under /, no folder entry: the engine makes a missing folder (0755) and
            # leaves an existing one (/root, /etc) as it is.
            files = core_mirrors.render(site, user, os_release)
            runtime.put_files(container_id, "", {path.lstrip("/"): (data, 0o644) for path, data in files.items()}, "/")
            cause = "package mirror settings written"
        except RuntimeError_ as exc:
            log.warning("instance %s: package mirror settings not written: %s", instance.id, exc)
            cause = f"package mirror settings not written: {exc}"
        with self.platform.sessions.begin() as db:
            db.add(InstanceEvent(instance_id=instance.id, from_status=instance.status, to_status=instance.status,
                                 cause=cause[:500]))

    def _write_start_files(self, runtime: Runtime, container_id: str, instance: Instance) -> None:
        """Before every start, in one archive upload (nothing of the image runs): the owner's
        current SSH keys (a key removed since the last start stops working now, even in a
        container that is reused) and dockyard-shutdown with this start's token. A failure
        leaves the instance without them, never without its start."""
        with self.platform.sessions.begin() as db:
            keys = authorized_keys(db, instance.owner_id)
        files, dirs = inside.start_files(self.platform, instance.id)
        files["root/.ssh/authorized_keys"] = (keys.encode(), 0o600)
        try:
            runtime.put_files(container_id, "", files, "/", dirs={**dirs, "root/.ssh": 0o700})
        except RuntimeError_ as exc:
            log.info("could not write the start's files in %s: %s", container_id[:12], exc)

    def _save_system_disk(self, runtime: Runtime, instance: Instance, container_id: str) -> None:
        runtime.stop(container_id, timeout=self.platform.settings.stop_timeout_s)
        repository = f"dy-{self.platform.deployment}-sysdisk"
        tag = f"{instance.id}-{int(time.time() * 1000)}"
        runtime.commit(container_id, repository, tag)
        saved = f"{repository}:{tag}"
        if runtime.layer_count(saved) > self.platform.settings.max_sysdisk_layers:
            # Every commit adds a layer and overlay2 stops at 128: squash into one.
            saved = runtime.flatten(saved, repository, f"{tag}-flat")
            runtime.remove_image(f"{repository}:{tag}")
        # Record the saved disk before the container goes: a crash now loses nothing.
        with self.platform.sessions.begin() as db:
            row = db.get(Instance, instance.id)
            row.sysdisk_image, row.container_id, row.container_gpus = saved, None, []
        runtime.remove(container_id)
        instance.sysdisk_image, instance.container_id = saved, None

    def _drop_old_system_disks(self, runtime: Runtime, instance_id: str) -> None:
        """Untag saved system disks older than the current one (committed images carry
        the container's labels, so they are found by instance)."""
        with self.platform.sessions.begin() as db:
            current = db.get(Instance, instance_id).sysdisk_image
        for ref in runtime.list_images({**self.platform.labels, "dockyard.instance": instance_id}):
            if ref != current:
                try:
                    runtime.remove_image(ref)
                except RuntimeError_ as exc:  # only a name; the next start tries again
                    log.info("could not untag %s: %s", ref, exc)

    def _stop(self, instance: Instance, status: Status) -> None:
        runtime = self.platform.runtime(instance.node_name)
        if instance.container_id:
            if runtime.inspect(instance.container_id) is None:
                raise ContainerGone("the instance's container (its system disk) vanished from the node")
            runtime.stop(instance.container_id, timeout=self.platform.settings.stop_timeout_s)
        transition(self.platform, instance.id, status, Status.STOPPED, "container stopped; GPUs returned")

    def _disks(self, db, instance: Instance) -> dict[str, tuple[int, dict[str, str], str]]:
        """The instance's disks: engine name -> (size in GB, labels, mount point): its own
        data disk (unless a volume is mounted there) and its volumes."""
        found = {v.engine_name: (v.size_gb, volumes.labels(self.platform, v.id), v.mount_path)
                 for v in volumes.mounted(db, instance.id)}
        if DATA_MOUNT not in {path for _, _, path in found.values()}:
            own = {**self.platform.labels, "dockyard.instance": instance.id}
            found = {data_volume(self.platform, instance.id): (instance.data_disk_gb, own, DATA_MOUNT), **found}
        return found

    def _release(self, instance: Instance, status: Status) -> None:
        """Remove the container and the system disk; the data disk is kept as a volume
        (recorded in the release's own transaction) unless the user chose to delete it.
        A crash anywhere leaves the instance releasing with its data disk, or released
        with the volume: this step runs again until it commits."""
        runtime = self.platform.runtime(instance.node_name)
        for container_id in {instance.container_id, container_name(self.platform, instance.id)} - {None}:
            runtime.remove(container_id)
        own_disk = data_volume(self.platform, instance.id)
        with self.platform.sessions.begin() as db:
            row = db.get(Instance, instance.id)
            keep, size_gb = row.keep_data_on_release, row.data_disk_gb
            has_own = not volumes.has_data_volume(db, instance.id)
        present = own_disk in runtime.list_volumes({**self.platform.labels, "dockyard.instance": instance.id})
        kept = keep and has_own and present
        if not kept:
            runtime.remove_volume(own_disk)
        for ref in runtime.list_images({**self.platform.labels, "dockyard.instance": instance.id}):
            runtime.remove_image(ref)
        cause = "container and system disk removed; data disk kept as a volume" if kept else "container and disks removed"
        transition(self.platform, instance.id, status, Status.RELEASED, cause,
                   also=lambda db: volumes.on_release(db, db.get(Instance, instance.id), own_disk if kept else None,
                                                      size_gb),
                   released_at=utcnow(), container_id=None, container_gpus=[], sysdisk_image=None)

    def _fail(self, instance: Instance, status: Status, error: RuntimeError_) -> bool:
        """Fail the instance, except where failing could leave a container running with
        GPUs handed to someone else: a stop or release that the engine refused is kept
        (with the error as its reason) and retried. Returns whether it failed."""
        log.warning("instance %s: %s failed: %s", instance.id, status, error)
        if status in (Status.STOPPING, Status.RELEASING) and not isinstance(error, ContainerGone):
            with self.platform.sessions.begin() as db:
                db.get(Instance, instance.id).status_reason = f"retrying: {error}"
            return False
        transition(self.platform, instance.id, status, Status.FAILED, str(error))
        return True

    def _spec(self, instance: Instance, node: Node, gpus: list, access: GpuAccess, image_ref: str, network: str,
              mounts: dict[str, tuple[int, dict[str, str], str]], member=None) -> ContainerSpec:
        settings = self.platform.settings
        uuids = list(access.device_ids)
        # the host's share per GPU, times the GPUs (or the part of one) held; placement counts the same
        cpus, memory = host_share(node, settings).of(instance.gpu_milli if gpus else 0, node.cpus)
        real = bool(gpus) and not gpus[0].simulated
        env = {
            **(instance.env or {}),
            **self.platform.secret_box.open(instance.secret_env),  # opened only here, never logged
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
            name=container_name(self.platform, instance.id),
            image=image_ref,
            command=command,
            env=env,
            labels={
                **self.platform.labels,
                "dockyard.instance": instance.id,
                "dockyard.owner": str(instance.owner_id),
                "dockyard.gpus": ",".join(sorted(uuids)),
            },
            hostname=member.hostname if member else instance.name,
            network=network,
            aliases=[member.hostname] if member else [],  # <cluster>-<rank> on its network
            ipv4_address=member.ipv4_address if member else None,
            volumes={**{name: path for name, (_, _, path) in mounts.items()},
                     **({mps_daemon_name(self.platform, access.mps_gpu): MPS_PIPE_DIR} if access.mps_gpu else {})},
            ipc_mode=f"container:{mps_daemon_name(self.platform, access.mps_gpu)}" if access.mps_gpu else None,
            ports={22: (settings.ssh_bind, instance.ssh_port)} if instance.ssh_port else {},
            gpu_uuids=uuids,
            real_gpus=real,
            nano_cpus=int(cpus * 1e9),
            memory_bytes=memory,
            pids_limit=settings.pids_limit,
            shm_bytes=int(settings.shm_size_gb * GIB),
            system_disk_gb=settings.system_disk_gb,
        )
