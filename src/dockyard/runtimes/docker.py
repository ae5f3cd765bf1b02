"""The Docker backend: one engine reached by unix://, tcp:// (TLS) or ssh://."""

from __future__ import annotations

import io
import ipaddress
import json
import logging
import os
import secrets
import tarfile
import threading
from pathlib import Path
from typing import Callable, Iterator

import docker
from docker.errors import APIError, ImageNotFound, NotFound
from docker.tls import TLSConfig
from docker.types import DeviceRequest, IPAMConfig, IPAMPool, Ulimit
from docker.utils import version_gte

from dockyard.config import LOCAL_NODE, NodeConfig
from dockyard.core.catalog import CatalogEntry
from dockyard.core.gpus import GpuFacts
from dockyard.core.progress import PullProgress, with_percent
from dockyard.core.metrics import CpuCounters
from dockyard.core.sharing import MPS_PIPE_DIR
from dockyard.runtimes import cluster_net, docker_errors, docker_tools, gpu_discovery, image_build
from dockyard.runtimes.disks import LoopDisks
from dockyard.runtimes.docker_exec import BoundedExec
from dockyard.runtimes.docker_errors import engine_error
from dockyard.runtimes.base import (
    BUSYBOX,
    TOOLS_MOUNT,
    ContainerInfo,
    ContainerSpec,
    ContainerStats,
    Feature,
    HELPER_LABEL,
    HostResources,
    ImageInfo,
    RuntimeError_,
    SwarmState,
)

log = logging.getLogger(__name__)

# Capabilities of Docker's default set that an instance has no use for: raw sockets
# (spoofing on the bridge), device nodes, file capabilities, audit records. What sshd
# and JupyterLab need stays (setuid/setgid, chroot, chown, kill, binding port 22).
DROPPED_CAPABILITIES = ["NET_RAW", "MKNOD", "SETFCAP", "SETPCAP", "AUDIT_WRITE"]


# Run by the platform's busybox sh over a system disk being saved as an image: what
# would let the author in, or let one instance pass for another, goes.
SCRUB_SCRIPT = """
rm -f /etc/ssh/ssh_host_*_key /etc/ssh/ssh_host_*_key.pub /etc/environment \
      /etc/profile.d/01-dockyard-env.sh /root/.ssh/authorized_keys /etc/dockyard/shutdown
if [ -f /etc/shadow ]; then sed -i -e 's/^root:[^:]*:/root:*:/' /etc/shadow; fi
"""


# Copying small files in and out of a container (SSH keys, mirror settings, os-release) gets its
# own deadline and size limit: a wedged engine or a huge file must not hold a driver thread.
FILE_COPY_TIMEOUT_S = 20
# Docker's btrfs driver takes sizes but does not hold them safely: with simple quotas a
# container filled to its size can never be mounted again (its start and export fail:
# the size is set again at every mount, under what it holds), and full quota groups stop
# counting once a container is removed. So btrfs nodes measure instead (docs/volumes.md).
BTRFS_SIZES = "Docker's btrfs driver does not hold container sizes safely"
FILE_READ_LIMIT = 64 * 1024


class DockerRuntime:
    def __init__(self, node: NodeConfig, network_pool: str = "10.213.0.0/16", network_prefix: int = 24,
                 timeout: int = 120, busybox: Path = Path("/bin/busybox"), disks: LoopDisks | None = None,
                 ping_timeout_s: float = 5):
        # Disks of a fixed size (runtimes/disks.py); None: plain volumes, sizes not enforced.
        self.disks = disks
        self.node_name, self.url = node.name, node.url
        self.network_pool, self.network_prefix = network_pool, network_prefix
        tls = None
        if node.url.startswith("tcp://"):  # the config insists on all three
            tls = TLSConfig(client_cert=(node.tls_cert, node.tls_key), ca_cert=node.tls_ca, verify=True)
        self.client = docker.DockerClient(
            base_url=node.url,
            tls=tls,
            timeout=timeout,
            use_ssh_client=node.url.startswith("ssh://"),
            max_pool_size=32,
        )
        # Liveness on its own connection and a short deadline: a busy pool or a hung
        # engine must not hold the answer up.
        self._pinger = docker.APIClient(base_url=node.url, tls=tls, timeout=ping_timeout_s,
                                        use_ssh_client=node.url.startswith("ssh://"))
        self._files_api = docker.APIClient(base_url=node.url, tls=tls, timeout=FILE_COPY_TIMEOUT_S,
                                           version=self.client.api.api_version,
                                           use_ssh_client=node.url.startswith("ssh://"))
        self._connection = {"base_url": node.url, "tls": tls, "version": self.client.api.api_version,
                            "use_ssh_client": node.url.startswith("ssh://")}
        self._network_lock = threading.Lock()
        # User networks by name -> (id, labels): looked up once, not at every create (the
        # platform never removes them); one removed behind our back is made again when a
        # start finds it gone (`start`).
        self._networks: dict[str, tuple[str, dict[str, str]]] = {}
        self.ulimits: list[Ulimit] = []  # see probe_ulimits
        self.limits_system_disk = False  # see probe_disk_limit
        self._data_root: str | None = None  # see probe_disk_limit and storage_free
        self.tools = docker_tools.ToolsVolume(self.client, busybox)

    def lacks(self, feature: Feature) -> str | None:
        if feature == Feature.SIZED_DISKS and self.disks is None:
            return f"node {self.node_name} keeps data disks as plain Docker volumes (sized_disks = false)"
        if feature == Feature.SYSTEM_DISK_LIMIT and not self.limits_system_disk:
            return f"the storage driver of node {self.node_name} cannot hold a container's layer to a size"
        return None

    def api(self, timeout_s: float) -> docker.APIClient:
        """A connection of its own to this engine, for long streams (a migration's copies,
        runtimes/transfer.py): `timeout_s` bounds each read and write on it."""
        return docker.APIClient(timeout=timeout_s, **self._connection)

    def alive(self) -> bool:
        try:
            return self._pinger.ping()
        except Exception:  # refused, timed out, TLS, a broken answer: not answering
            return False

    def resources(self) -> HostResources:
        info = self.client.info()
        return HostResources(cpus=float(info["NCPU"]), memory_bytes=int(info["MemTotal"]))

    def image_exists(self, ref: str) -> bool:
        return self.image_info(ref) is not None

    def image_info(self, ref: str) -> ImageInfo | None:
        try:
            data = self.client.api.inspect_image(ref)
        except ImageNotFound:
            return None
        return ImageInfo(id=data["Id"], size_bytes=int(data.get("Size") or 0),
                         labels=(data.get("Config") or {}).get("Labels") or {})

    def ensure_image(self, ref: str, on_progress: Callable[[str], None] | None = None) -> None:
        if self.image_exists(ref):
            return
        pulled = PullProgress()
        try:
            for event in self.client.api.pull(ref, stream=True, decode=True):
                percent = pulled.feed(event)
                if on_progress and event.get("status"):
                    text = " ".join(str(event[k]) for k in ("id", "status", "progress") if event.get(k))
                    on_progress(text if percent is None else with_percent(text, percent))
        except APIError as exc:
            raise engine_error(exc, f"image {ref} is not on this node and could not be pulled") from exc
        if not self.image_exists(ref):
            raise RuntimeError_(f"image {ref} could not be pulled")

    def ensure_network(self, name: str, labels: dict[str, str]) -> str:
        """The id of the network called `name`, made if missing. Docker allows two
        networks of one name, so creation is serialised and the oldest one wins. Looked
        up once: `start` makes one removed behind our back again."""
        with self._network_lock:
            if name not in self._networks:
                self._networks[name] = (self._find_or_make_network(name, labels), labels)
            return self._networks[name][0]

    def _remake_networks(self, container_id: str, error: APIError) -> bool:
        """After a start refused for a missing network: the user networks of the container
        that `ensure_network` remembered are looked up (made) again and the container is
        joined to them afresh. Whether there were any."""
        if not docker_errors.network_missing(error):
            return False
        try:
            joined = self.client.api.inspect_container(container_id)["NetworkSettings"]["Networks"] or {}
        except APIError:
            return False
        gone = []  # (the container's key for it: the name, or the id when made after the removal)
        with self._network_lock:
            for name, (known, labels) in list(self._networks.items()):
                key = name if name in joined else known if known in joined else None
                if key is not None:
                    del self._networks[name]
                    gone.append((key, name, labels))
        for key, name, labels in gone:
            network = self.ensure_network(name, labels)
            self.client.api.disconnect_container_from_network(container_id, key, force=True)
            self.client.api.connect_container_to_network(container_id, network)
        return bool(gone)

    def _find_or_make_network(self, name: str, labels: dict[str, str]) -> str:
        found = [n for n in self.client.networks.list(names=[name]) if n.name == name]
        if found:
            return min(found, key=lambda n: n.attrs["Created"]).id
        # Docker's default pools hold only a few dozen bridges: take small ones from ours.
        for attempt in range(3):
            subnet = self._free_subnet()
            ipam = IPAMConfig(pool_configs=[IPAMPool(subnet=str(subnet), gateway=str(subnet[1]))])
            try:
                # A bridge of its own per user: Docker drops traffic between bridges.
                return self.client.networks.create(name, driver="bridge", labels=labels, ipam=ipam).id
            except APIError as exc:
                # Another installation on this engine took that subnet just now: pick again.
                if not docker_errors.subnet_taken(exc) or attempt == 2:
                    raise engine_error(exc) from exc

    def _free_subnet(self) -> ipaddress.IPv4Network:
        taken = [ipaddress.ip_network(subnet, strict=False) for subnet in self.taken_subnets()]
        pool = ipaddress.ip_network(self.network_pool)
        for subnet in pool.subnets(new_prefix=self.network_prefix):
            if not any(subnet.overlaps(other) for other in taken):
                return subnet
        raise RuntimeError_(f"no free /{self.network_prefix} left in the network pool {pool}")

    def swarm_state(self) -> SwarmState:
        return cluster_net.swarm_state(self)

    def taken_subnets(self) -> list[str]:
        return cluster_net.taken_subnets(self)

    def ensure_cluster_network(self, name: str, subnet: str, driver: str, labels: dict[str, str],
                               encrypted: bool = False) -> str:
        return cluster_net.ensure_network(self, name, subnet, driver, labels, encrypted)

    def remove_cluster_network(self, name: str) -> None:
        cluster_net.remove_network(self, name)

    def ensure_volume(self, name: str, labels: dict[str, str], size_gb: int | None = None,
                      before_start: bool = False) -> None:
        """The volume `name`, made if missing: with `size_gb`, on a disk of that size (kept
        mounted: this mounts it again after a reboot). A plain volume made before sizes
        were enforced stays as it is. `before_start`: a container start follows, and the
        spare disk this may take is made again after it (`start`), not beside it."""
        try:
            self.client.volumes.get(name)
            exists = True
        except NotFound:
            exists = False
        sized = size_gb is not None and self.disks is not None and (not exists or self.disks.exists(name))
        if sized:
            point = self.disks.ensure(name, size_gb, refill=not before_start)
        if exists:
            return
        try:
            if sized:
                self.client.volumes.create(name, driver="local", labels=labels,
                                           driver_opts={"type": "none", "o": "bind", "device": str(point)})
            else:
                self.client.volumes.create(name, labels=labels)
        except APIError as exc:
            raise engine_error(exc) from exc

    def remove_volume(self, name: str) -> None:
        try:
            self.client.volumes.get(name).remove(force=True)
        except NotFound:
            pass
        except APIError as exc:
            raise engine_error(exc) from exc
        if self.disks is not None:
            self.disks.remove(name)

    def resize_volume(self, name: str, size_gb: int) -> None:
        """Grow or shrink a sized volume that no running container holds."""
        if self.disks is None or not self.disks.exists(name):
            raise RuntimeError_("this volume has no fixed size (it was made where sizes are not enforced)")
        self.disks.resize(name, size_gb)

    def volume_usage(self, name: str) -> tuple[int, int] | None:
        """(size, used) bytes of a sized volume, None for a plain one."""
        if self.disks is None or not self.disks.exists(name):
            return None
        self.disks.ensure(name, 1)  # mounted (an existing disk keeps its size)
        return self.disks.usage(name)

    def list_volumes(self, labels: dict[str, str]) -> list[str]:
        filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
        return [v.name for v in self.client.volumes.list(filters=filters)]

    def copy_volume(self, source: str, target: str, image: str, name: str, labels: dict[str, str],
                    timeout_s: float = 6 * 3600) -> None:
        """Copy every file of volume `source` into `target` (owners, modes and times kept),
        with a short-lived helper container that mounts both: the platform's busybox does
        the copy (never a program of the image, which only lends its empty root), with no
        network, `source` read-only, and limits on CPU, memory, processes and time."""
        try:
            tools = self.tools.ensure(image)
            helper = self.client.api.create_container(
                image, command=["cp", "-a", "/from/.", "/to/"], entrypoint=[BUSYBOX], name=name,
                labels=labels, network_disabled=True, host_config=self.client.api.create_host_config(
                    binds={source: {"bind": "/from", "mode": "ro"}, target: {"bind": "/to", "mode": "rw"},
                           tools: {"bind": TOOLS_MOUNT, "mode": "ro"}},
                    network_mode="none", privileged=False, security_opt=["no-new-privileges"],
                    cap_drop=["ALL"], cap_add=["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID"],
                    nano_cpus=1_000_000_000, mem_limit="512m", pids_limit=64))
            try:
                self.client.api.start(helper["Id"])
                try:
                    code = self.client.api.wait(helper["Id"], timeout=timeout_s)["StatusCode"]
                except Exception as exc:  # the engine's wait timed out: the copy took too long
                    raise RuntimeError_(f"copying volume {source} did not finish in {timeout_s:.0f} s") from exc
                if code != 0:
                    output = self.client.api.logs(helper["Id"], tail=5).decode(errors="replace").strip()[-2000:]
                    raise RuntimeError_(f"copying volume {source} failed (exit code {code}): {output}")
            finally:
                self.client.api.remove_container(helper["Id"], force=True)
        except ImageNotFound as exc:
            raise RuntimeError_(f"image {image} is not on this node") from exc
        except APIError as exc:
            raise engine_error(exc) from exc

    def create(self, spec: ContainerSpec) -> str:
        try:
            options = create_options(self.client.api, spec, self.tools.ensure(spec.image), self.ulimits,
                                     self.limits_system_disk)
            container = self.client.containers.create(spec.image, **options)
        except ImageNotFound as exc:
            raise RuntimeError_(f"image {spec.image} is not on this node") from exc
        except APIError as exc:
            raise engine_error(exc) from exc
        return container.id

    def discover_gpus(self, probe_image: str) -> list[GpuFacts]:
        """NVML for the engine on this host; else ask the remote engine to run nvidia-smi in
        a throwaway container (the NVIDIA runtime mounts it in)."""
        if self.node_name == LOCAL_NODE and self.url.startswith("unix://"):
            return gpu_discovery.discover_nvml()
        if self.image_exists(probe_image):
            return gpu_discovery.discover_with_container(self.client, probe_image)
        return []

    def build_image(self, entry: CatalogEntry, recipes: Path, ca_bundle: Path | None,
                    on_progress: Callable[[str], None]) -> None:
        """Build a catalog image from its recipe on this engine."""
        image_build.build_image(self.client, entry, recipes, ca_bundle, on_progress)

    def probe_ulimits(self, image: str) -> None:
        """Decide, once at connect, the limits containers get: memlock unlimited and
        nofile 1048576 (what NCCL wants), or, on an engine not allowed to raise limits
        (no CAP_SYS_RESOURCE), its own hard limits. Tried with a throwaway container."""
        wanted = [Ulimit(name="memlock", soft=-1, hard=-1), Ulimit(name="nofile", soft=1048576, hard=1048576)]
        limits: list[Ulimit] = []  # the engine's defaults, when nothing can be learned
        if self.image_exists(image):
            try:
                self._probe(image, "true", wanted)
                limits = wanted
            except APIError as exc:
                if docker_errors.rlimit_refused(exc):
                    try:
                        found = self._probe(image, "ulimit -H -l; ulimit -H -n", []).split()
                        limits = [_ulimit(name, value) for name, value in zip(("memlock", "nofile"), found)]
                    except (APIError, ValueError):
                        pass
            except Exception:  # an image without /bin/sh, a slow engine: keep the defaults
                pass
        self.ulimits = limits

    def probe_disk_limit(self, image: str) -> None:
        """Decide, once at connect, whether the engine can hold a container's own layer to a
        size (overlay2 on XFS with pquota, zfs): tried with a container that is created, never
        started. And where its data root is, when it runs on this host (storage_free)."""
        try:
            info = self.client.info()
        except Exception:  # an engine that does not answer now: the create below says so
            info = {}
        root = info.get("DockerRootDir") if self.url.startswith("unix://") else None
        self._data_root = root if root and os.path.isdir(root) else None
        probe = f"dockyard-disk-probe-{secrets.token_hex(4)}"
        try:
            if info.get("Driver") == "btrfs":
                raise RuntimeError_(BTRFS_SIZES)
            self.client.containers.create(image, ["true"], name=probe, storage_opt={"size": "1G"},
                                          network_mode="none")
            self.limits_system_disk = True
        except Exception as exc:  # "--storage-opt is supported only for overlay over xfs with 'pquota'"
            log.info("node %s cannot limit system disks itself (%s): they are measured instead", self.node_name,
                     getattr(exc, "explanation", None) or exc)
            self.limits_system_disk = False
        finally:  # by name: an engine that refuses the size may still have registered it
            try:
                self.client.api.remove_container(probe, force=True)
            except Exception:  # never made, or an engine that does not answer now
                pass

    def storage_free(self, container_id: str | None = None) -> int | None:
        """Free bytes on the file system that holds the engine's containers: one statvfs
        where the engine runs on this host; else the platform's `df /` inside `container_id`,
        a running container of the node (an overlay reports the file system under it)."""
        if self._data_root is not None:
            try:
                found = os.statvfs(self._data_root)
                return found.f_bavail * found.f_frsize
            except OSError:
                return None
        if container_id is None:
            return None
        try:
            code, output = self.tool(container_id, ["df", "-kP", "/"], timeout_s=5, max_bytes=4096)
            fields = output.decode(errors="replace").strip().splitlines()[-1].split()
            return int(fields[3]) * 1024 if code == 0 else None  # df -P: fs, blocks, used, available
        except (RuntimeError_, IndexError, ValueError):
            return None

    def system_disk_used(self, container_id: str) -> int | None:
        """Bytes in the container's own layer (what it wrote over its image), as the engine
        counts them; None when the container is gone."""
        try:
            found = self.client.api.containers(all=True, size=True, filters={"id": container_id})
        except APIError as exc:
            raise engine_error(exc) from exc
        return int(found[0].get("SizeRw") or 0) if found else None

    def _probe(self, image: str, script: str, ulimits: list[Ulimit]) -> bytes:
        container = self.client.containers.create(image, ["-c", script], entrypoint=["/bin/sh"], ulimits=ulimits,
                                                  network_mode="none")
        try:
            container.start()
            container.wait(timeout=60)
            return container.logs()
        finally:
            container.remove(force=True)

    def read_file(self, container_id: str, path: str, limit: int = FILE_READ_LIMIT) -> bytes | None:
        """A regular file's content (at most `limit` bytes), or None when there is no such
        file (a symlink is not followed: read its target's path)."""
        try:
            stream, stat = self._files_api.get_archive(container_id, path, chunk_size=16384)
        except NotFound:
            return None
        except APIError as exc:
            raise engine_error(exc, f"could not read {path}") from exc
        except Exception as exc:
            raise RuntimeError_(f"could not read {path}: {exc}") from exc
        if stat.get("size", 0) > limit:
            return None
        raw = bytearray()
        for chunk in stream:
            raw += chunk
            if len(raw) > limit + 4096:  # the file plus its tar headers
                return None
        with tarfile.open(fileobj=io.BytesIO(bytes(raw))) as tar:
            member = tar.next()
            if member is None or not member.isfile():
                return None
            return tar.extractfile(member).read(limit)

    def start(self, container_id: str) -> None:
        try:
            try:
                self.client.api.start(container_id)
            except APIError as exc:
                if not self._remake_networks(container_id, exc):
                    raise
                self.client.api.start(container_id)
        except APIError as exc:
            raise engine_error(exc) from exc
        finally:
            if self.disks is not None:  # a spare taken for this start (ensure_volume), made again now
                self.disks.refill()

    def stop(self, container_id: str, timeout: int) -> None:
        try:
            self.client.api.stop(container_id, timeout=timeout)
        except NotFound:
            pass
        except APIError as exc:
            raise engine_error(exc) from exc

    def remove(self, container_id: str, with_volumes: bool = False) -> None:
        """`with_volumes`: its anonymous volumes too (a helper's; never an instance's, whose
        image may keep data in them)."""
        try:
            self.client.api.remove_container(container_id, force=True, v=with_volumes)
        except NotFound:
            pass
        except APIError as exc:
            if not docker_errors.removal_in_progress(exc):
                raise engine_error(exc) from exc

    def inspect(self, container_id: str) -> ContainerInfo | None:
        try:
            data = self.client.api.inspect_container(container_id)
        except NotFound:
            return None
        return _info(data)

    def list(self, labels: dict[str, str]) -> list[ContainerInfo]:
        filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
        return [
            ContainerInfo(id=c["Id"], name=c["Names"][0].lstrip("/"), status=c["State"], labels=c["Labels"] or {})
            for c in self.client.api.containers(all=True, filters=filters)
        ]

    def logs(self, container_id: str, tail: int, follow: bool, max_bytes: int = 64 * 1024 * 1024) -> CappedStream:
        """The container's output, streamed (never gathered in memory) and cut at `max_bytes`."""
        try:
            chunks = self.client.api.logs(container_id, stream=True, follow=follow, tail=tail)
        except APIError as exc:
            raise engine_error(exc, of_container=True) from exc
        return CappedStream(chunks, max_bytes)

    def exec(self, container_id: str, command: list[str], timeout_s: float = 60,
             max_bytes: int = 1024 * 1024) -> tuple[int, bytes]:
        """Run `command` for the platform, with a fixed PATH; its output cut at `max_bytes`,
        the command killed at `timeout_s`. Exit code -1 when it was stopped."""
        run = self.exec_stream(container_id, command, timeout_s, max_bytes, fixed_path=True)
        output = run.read_all()
        return (-1 if run.exit_code is None else run.exit_code), output

    def exec_stream(self, container_id: str, command: list[str], timeout_s: float, max_bytes: int,
                    fixed_path: bool = False) -> BoundedExec:
        """A command's output as it comes. A user's command sees the container's own
        environment; the platform's (`fixed_path`) a PATH of its choosing."""
        environment = [f"PATH={docker_tools.FIXED_PATH}"] if fixed_path else None
        return BoundedExec(self.client, container_id, command, timeout_s, max_bytes, environment)

    def tool(self, container_id: str, args: list[str], timeout_s: float = 30,
             max_bytes: int = 1024 * 1024) -> tuple[int, bytes]:
        """Run one of the platform's own tools (a busybox applet: `cat`, `df`, `sh`...) from
        its read-only volume, never a program of the image."""
        return self.exec(container_id, [BUSYBOX, *args], timeout_s, max_bytes)

    def put_files(self, container_id: str, directory: str, files: dict[str, tuple[bytes, int]],
                  parent: str, dir_mode: int = 0o755, dirs: dict[str, int] | None = None) -> None:
        """Write `files` (name -> (content, mode)) into `parent/directory` (directory "":
        names are paths under `parent`; `dirs`, folders there with their modes), owned by
        root, with an archive upload: no program of the image runs."""
        try:
            self._files_api.put_archive(container_id, parent, docker_tools.archive(files, directory, dir_mode, dirs))
        except APIError as exc:
            raise engine_error(exc, of_container=True) from exc
        except Exception as exc:  # a timeout or a broken connection: the caller decides
            raise RuntimeError_(f"could not write files into the container: {exc}") from exc

    def stats(self, container_id: str) -> ContainerStats | None:
        """One reading of a running container's counters. The engine answers about a
        second later (its collector's tick): callers sample many containers at once."""
        try:
            config = self.client.api.inspect_container(container_id)
            if not config["State"]["Running"]:
                return None
            # one-shot skips the engine's second reading (the caller keeps the previous one).
            one_shot = True if version_gte(self.client.api._version, "1.41") else None
            data = self.client.api.stats(container_id, stream=False, one_shot=one_shot)
        except NotFound:
            return None
        except APIError as exc:
            raise engine_error(exc) from exc
        cpu, memory = data.get("cpu_stats") or {}, data.get("memory_stats") or {}
        if not cpu.get("system_cpu_usage") or not memory.get("limit"):
            return None  # it stopped between the two calls
        host = config["HostConfig"]
        return ContainerStats(
            cpu=CpuCounters(container_ns=int(cpu["cpu_usage"]["total_usage"]), host_ns=int(cpu["system_cpu_usage"]),
                            host_cpus=int(cpu.get("online_cpus") or len(cpu["cpu_usage"].get("percpu_usage") or [1])),
                            limit_cpus=(host.get("NanoCpus") or 0) / 1e9),
            memory_used=memory_used(memory),
            memory_limit=int(memory["limit"]),
        )

    def commit(self, container_id: str, repository: str, tag: str, labels: dict[str, str] | None = None) -> str:
        # LABEL changes override the labels the image would inherit from the container.
        changes = [f'LABEL "{k}"="{v}"' for k, v in (labels or {}).items()]
        try:
            # Never pause: a paused container blocks every exec into it, and this engine's
            # version can deadlock a commit against a concurrent exec.
            image = self.client.api.commit(container_id, repository=repository, tag=tag, changes=changes or None,
                                           pause=False)
        except APIError as exc:
            raise engine_error(exc) from exc
        return image["Id"]

    def save_image(self, container_id: str, repository: str, tag: str, labels: dict[str, str]) -> str:
        """Commit a container's files as an image for others to use, without what made it
        this instance: the environment values set at its creation are blanked (the names
        stay, empty: a commit cannot drop them), and a platform-run scrub removes SSH host
        keys, the root password and the files the entrypoint writes from the environment."""
        raw_tag = f"{tag}-unscrubbed"
        try:
            container = self.client.api.inspect_container(container_id)
            image_env = {e.split("=", 1)[0] for e in (self.client.api.inspect_image(container["Image"])["Config"]
                                                      .get("Env") or [])}
            added = sorted({e.split("=", 1)[0] for e in container["Config"].get("Env") or []} - image_env)
            self.commit(container_id, repository, raw_tag)
            config = self.client.api.inspect_image(f"{repository}:{raw_tag}")["Config"] or {}
            tools = self.tools.ensure(f"{repository}:{raw_tag}")
            scrub = self.client.api.create_container(
                f"{repository}:{raw_tag}", command=["sh", "-c", SCRUB_SCRIPT], entrypoint=[BUSYBOX],
                network_disabled=True, labels={**labels, HELPER_LABEL: "save"},
                host_config=self.client.api.create_host_config(
                    binds={tools: {"bind": TOOLS_MOUNT, "mode": "ro"}}, network_mode="none",
                    security_opt=["no-new-privileges"], nano_cpus=1_000_000_000, mem_limit="256m", pids_limit=32))
            try:
                self.client.api.start(scrub["Id"])
                code = self.client.api.wait(scrub["Id"], timeout=300)["StatusCode"]
                if code != 0:
                    output = self.client.api.logs(scrub["Id"], tail=5).decode(errors="replace")[-1000:]
                    raise RuntimeError_(f"cleaning the saved system disk failed (exit code {code}): {output}")
                changes = [f"ENV {json.dumps(name)}=\"\"" for name in added]
                changes += [f"LABEL {json.dumps(k)}={json.dumps(v)}" for k, v in labels.items()]
                changes.append(f"ENTRYPOINT {json.dumps(config.get('Entrypoint') or [])}")
                changes.append(f"CMD {json.dumps(config.get('Cmd') or [])}")
                image = self.client.api.commit(scrub["Id"], repository=repository, tag=tag, changes=changes,
                                               pause=False)
            finally:
                self.client.api.remove_container(scrub["Id"], force=True)
                self.remove_image(f"{repository}:{raw_tag}")
        except APIError as exc:
            raise engine_error(exc, of_container=True) from exc
        return image["Id"]

    def keep_system_disk(self, container_id: str, repository: str, tag: str, max_layers: int,
                         labels: dict[str, str] | None = None) -> str:
        """Commit the container's own layer as an image a new container starts from, and
        return its reference. Every commit adds a layer and overlay2 stops at 128: past
        `max_layers` the image is squashed into one."""
        self.commit(container_id, repository, tag, labels)
        ref = f"{repository}:{tag}"
        if self.layer_count(ref) <= max_layers:
            return ref
        flat = self.flatten(ref, repository, f"{tag}-flat")
        self.remove_image(ref)
        return flat

    def layer_count(self, ref: str) -> int:
        return len(self.client.api.inspect_image(ref)["RootFS"].get("Layers") or [])

    def flatten(self, ref: str, repository: str, tag: str) -> str:
        """Copy an image into a single layer (export + import), keeping its config: a
        system disk saved at every GPU change would otherwise hit overlay2's 128 layers."""
        config = self.client.api.inspect_image(ref)["Config"] or {}
        changes = [f"ENV {json.dumps(e.split('=', 1)[0])}={json.dumps(e.split('=', 1)[1])}" for e in config.get("Env") or []]
        changes += [f"LABEL {json.dumps(k)}={json.dumps(v)}" for k, v in (config.get("Labels") or {}).items()]
        for key, instruction in (("Entrypoint", "ENTRYPOINT"), ("Cmd", "CMD")):
            if config.get(key):
                changes.append(f"{instruction} {json.dumps(config[key])}")
        if config.get("WorkingDir"):
            changes.append(f"WORKDIR {config['WorkingDir']}")
        try:
            scratch = self.client.api.create_container(ref, command=["true"], entrypoint=[])
            try:
                stream = self.client.api.export(scratch["Id"])
                self.client.api.import_image(src=stream, repository=repository, tag=tag, changes=changes,
                                             stream_src=True)
            finally:
                self.client.api.remove_container(scratch["Id"], force=True)
        except APIError as exc:
            raise engine_error(exc) from exc
        return f"{repository}:{tag}"

    def list_images(self, labels: dict[str, str]) -> list[str]:
        filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
        return [tag for image in self.client.images.list(filters=filters) for tag in image.tags]

    def ensure_mps_daemon(self, name: str, gpu_uuid: str, image: str, volume: str, labels: dict[str, str]) -> None:
        """Start (or create) the MPS daemon of one GPU; a running one is left alone."""
        found = self.inspect(name)
        if found is not None and found.running:
            return
        try:
            if found is None:
                self.ensure_volume(volume, labels)
                self.client.containers.create(**mps_daemon_config(name, gpu_uuid, image, volume, labels))
            self.client.api.start(name)
        except APIError as exc:
            raise engine_error(exc) from exc

    def remove_image(self, ref: str) -> None:
        try:
            self.client.api.remove_image(ref, noprune=False)
        except NotFound:
            pass
        except APIError as exc:
            raise engine_error(exc) from exc


class CappedStream:
    """An engine's stream of chunks, ended after `max_bytes`; `close` (from any thread)
    closes the connection under it, which also wakes a reader waiting on it."""

    def __init__(self, chunks, max_bytes: int):
        self.chunks, self.max_bytes = chunks, max_bytes

    def __iter__(self) -> Iterator[bytes]:
        sent = 0
        try:
            for chunk in self.chunks:
                if sent + len(chunk) >= self.max_bytes:
                    yield chunk[:self.max_bytes - sent]
                    return
                sent += len(chunk)
                yield chunk
        finally:
            self.close()

    def close(self) -> None:
        try:
            self.chunks.close()
        except Exception:  # already closed, or closed under a reader
            pass


def mps_daemon_config(name: str, gpu_uuid: str, image: str, volume: str, labels: dict[str, str]) -> dict:
    """The container of one GPU's MPS control daemon (docs/gpu-sharing.md): the GPU alone,
    with the compute capability (the NVIDIA runtime mounts nvidia-cuda-mps-control then),
    its pipe directory on a volume its clients mount too, and an IPC namespace they join."""
    return dict(
        image=image,
        command=["nvidia-cuda-mps-control", "-f"],
        name=name,
        environment={"CUDA_MPS_PIPE_DIRECTORY": MPS_PIPE_DIR, "CUDA_MPS_LOG_DIRECTORY": f"{MPS_PIPE_DIR}/log"},
        labels={**labels, "dockyard.mps": gpu_uuid},
        volumes={volume: {"bind": MPS_PIPE_DIR, "mode": "rw"}},
        device_requests=[DeviceRequest(device_ids=[gpu_uuid], capabilities=[["gpu", "compute", "utility"]])],
        ipc_mode="shareable",
        network_mode="none",
        restart_policy={"Name": "unless-stopped"},
        security_opt=["no-new-privileges"],
        log_config={"type": "json-file", "config": {"max-size": "5m", "max-file": "2"}},
    )


def create_options(api: docker.APIClient, spec: ContainerSpec, tools_volume: str, ulimits: list[Ulimit],
                   limits_system_disk: bool) -> dict:
    """The engine's options for an instance's container (the SDK's `containers.create`
    keywords), beside its image: one place, so that the benchmark makes the same calls."""
    volumes = {name: {"bind": path, "mode": "rw"} for name, path in spec.volumes.items()}
    volumes[tools_volume] = {"bind": TOOLS_MOUNT, "mode": "ro"}
    return dict(
        command=spec.command,
        name=spec.name,
        hostname=spec.hostname,
        environment=spec.env,
        labels=spec.labels,
        network=spec.network,
        volumes=volumes,
        ports={f"{port}/tcp": host for port, host in spec.ports.items()},
        device_requests=device_requests(spec),
        nano_cpus=spec.nano_cpus or None,
        mem_limit=spec.memory_bytes or None,
        memswap_limit=spec.memory_bytes or None,
        pids_limit=spec.pids_limit or None,
        shm_size=(spec.shm_bytes or None) if spec.ipc_mode is None else None,
        ipc_mode=spec.ipc_mode,
        storage_opt={"size": f"{spec.system_disk_gb}G"} if spec.system_disk_gb and limits_system_disk else None,
        # NCCL pins memory (memlock) and opens many sockets and files (nofile).
        ulimits=ulimits or None,
        # a cluster member's hostname alias and fixed address on its network.
        networking_config={spec.network: api.create_endpoint_config(aliases=spec.aliases or None,
                                                                    ipv4_address=spec.ipv4_address)}
        if spec.aliases or spec.ipv4_address else None,
        init=True,  # reap zombies and forward signals for any image
        privileged=False,
        security_opt=["no-new-privileges"],
        cap_drop=DROPPED_CAPABILITIES,
        log_config={"type": "json-file", "config": {"max-size": "20m", "max-file": "3"}},
    )


def device_requests(spec: ContainerSpec) -> list[DeviceRequest] | None:
    """Real GPUs go through the NVIDIA runtime by UUID, exactly those assigned; simulated
    ones exist only as environment values, so they ask for no device."""
    if not (spec.real_gpus and spec.gpu_uuids):
        return None
    return [DeviceRequest(device_ids=list(spec.gpu_uuids), capabilities=[["gpu"]])]


def memory_used(memory_stats: dict) -> int:
    """As `docker stats` counts it: usage less the inactive page cache (cgroup v1 names
    it total_inactive_file, v2 inactive_file), which the kernel drops before an OOM kill."""
    stats = memory_stats.get("stats") or {}
    cache = stats.get("total_inactive_file", stats.get("inactive_file", 0))
    usage = int(memory_stats.get("usage") or 0)
    return usage - cache if cache < usage else usage


def _info(data: dict) -> ContainerInfo:
    state = data["State"]
    return ContainerInfo(
        id=data["Id"],
        name=data["Name"].lstrip("/"),
        status=state["Status"],
        labels=data["Config"].get("Labels") or {},
        exit_code=state.get("ExitCode"),
        error=state.get("Error") or None,
        oom_killed=bool(state.get("OOMKilled")),
        ip=next((n["IPAddress"] for n in (data["NetworkSettings"].get("Networks") or {}).values()
                 if n.get("IPAddress")), None),
    )


def _ulimit(name: str, value: bytes) -> Ulimit:
    """A limit as `ulimit -H` prints it (memlock in KiB) -> soft = hard = that."""
    limit = -1 if value == b"unlimited" else int(value) * (1024 if name == "memlock" else 1)
    return Ulimit(name=name, soft=limit, hard=limit)
