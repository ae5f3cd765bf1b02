"""Copying disks from one Docker engine to another (a migration, docs/migrate.md).

A system disk is a committed image: streamed by `docker save` out of the source engine
into `docker load` on the target, never whole in memory; the target's image id (the
digest of its config, which names every layer's digest) must equal the source's. A
data disk or volume is streamed as a tar out of a helper container on the source that
mounts it read-only (the engine's archive API: nothing of the image runs) into one on
the target that mounts the new disk; a manifest of both sides (core/treecheck.py) then
proves the copy whole.

Every stream has its own connections, whose reads and writes wait at most `io_timeout_s`
(an engine that stops answering mid-copy ends the copy), and an overall deadline.
"""

from __future__ import annotations

import time
from typing import Callable, Iterable, Iterator

from docker.errors import APIError, DockerException
from requests.exceptions import RequestException

from dockyard.core import treecheck
from dockyard.runtimes.base import BUSYBOX, HELPER_LABEL, TOOLS_MOUNT, RuntimeError_
from dockyard.runtimes.docker import DockerRuntime

CHUNK = 1 << 20
MANIFEST_LIMIT = 64 * 1024 * 1024  # about half a million files
_FAILURES = (APIError, DockerException, RequestException, OSError)


class Deadline:
    def __init__(self, seconds: float):
        self.seconds, self.end = seconds, time.monotonic() + seconds

    def left(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise RuntimeError_(f"the migration did not finish in {self.seconds:.0f} s")
        return left


def _counted(chunks: Iterable[bytes], on_bytes: Callable[[int], None], deadline: Deadline) -> Iterator[bytes]:
    sent = 0
    for chunk in chunks:
        deadline.left()
        sent += len(chunk)
        on_bytes(sent)
        yield chunk


def _why(exc: Exception) -> str:
    return str(getattr(exc, "explanation", None) or exc)[:500]


def send_image(source: DockerRuntime, target: DockerRuntime, ref: str, on_bytes: Callable[[int], None],
               io_timeout_s: float, deadline: Deadline) -> None:
    """Copy image `ref` (with its tag) to `target` and check it arrived the same."""
    src, dst = source.api(io_timeout_s), target.api(io_timeout_s)
    try:
        chunks = src.get_image(ref, chunk_size=CHUNK)
        for event in dst.load_image(_counted(chunks, on_bytes, deadline), quiet=True):
            if event.get("error") or event.get("errorDetail"):
                raise RuntimeError_(f"the target engine refused the system disk: {event.get('error')}")
    except _FAILURES as exc:
        raise RuntimeError_(f"copying the system disk failed: {_why(exc)}") from exc
    finally:
        src.close()
        dst.close()
    want, have = source.image_info(ref), target.image_info(ref)
    if have is None or want is None or have.id != want.id:
        raise RuntimeError_(f"the system disk did not arrive whole (image {have.id if have else 'missing'}, "
                            f"source {want.id if want else 'missing'})")


def _helper(api, image: str, volume: str, labels: dict[str, str], mode: str, tools: str | None = None,
            command: list[str] | None = None) -> str:
    """A helper over a committed system disk, whose image names the instance's mount points
    as volumes: the engine would make an anonymous volume for each one not bound, which an
    engine that dies mid-copy leaves behind. They get a small tmpfs instead."""
    binds = {volume: {"bind": "/d", "mode": mode}}
    if tools:
        binds[tools] = {"bind": TOOLS_MOUNT, "mode": "ro"}
    declared = (api.inspect_image(image).get("Config") or {}).get("Volumes") or {}
    tmpfs = {path: "size=1m" for path in declared if path not in ("/d", TOOLS_MOUNT if tools else None)}
    return api.create_container(
        image, command=command or ["true"], entrypoint=[BUSYBOX] if command else [],
        labels={**labels, HELPER_LABEL: "migrate"}, network_disabled=True,
        environment={"B": BUSYBOX},
        host_config=api.create_host_config(
            binds=binds, tmpfs=tmpfs or None, network_mode="none", privileged=False, security_opt=["no-new-privileges"],
            cap_drop=["ALL"], cap_add=["DAC_READ_SEARCH"], nano_cpus=1_000_000_000, mem_limit="256m",
            pids_limit=64))["Id"]


def send_volume(source: DockerRuntime, target: DockerRuntime, volume: str, source_image: str, target_image: str,
                labels: dict[str, str], on_bytes: Callable[[int], None], io_timeout_s: float,
                deadline: Deadline) -> None:
    """Copy every file of `volume` into the volume of the same name on `target` (which
    must exist): owners, modes, times and links kept."""
    src, dst = source.api(io_timeout_s), target.api(io_timeout_s)
    made: list[tuple[object, str]] = []
    try:
        reader = _helper(src, source_image, volume, labels, "ro")
        made.append((src, reader))
        writer = _helper(dst, target_image, volume, labels, "rw")
        made.append((dst, writer))
        stream, _ = src.get_archive(reader, "/d", chunk_size=CHUNK)
        # The archive's top entry is d/: extracted at / it lands on the target's mount.
        dst.put_archive(writer, "/", _counted(stream, on_bytes, deadline))
    except _FAILURES as exc:
        raise RuntimeError_(f"copying disk {volume} failed: {_why(exc)}") from exc
    finally:
        for api, helper in made:
            try:
                api.remove_container(helper, force=True, v=True)
            except _FAILURES:  # an engine gone: the sweep removes it when it answers
                pass
        src.close()
        dst.close()


def manifest(runtime: DockerRuntime, volume: str, image: str, labels: dict[str, str], io_timeout_s: float,
             deadline: Deadline) -> treecheck.Manifest:
    """The manifest of a volume, made by the platform's busybox in a helper that mounts
    it read-only (never a program of the image)."""
    api = runtime.api(io_timeout_s)
    helper = None
    try:
        tools = runtime.tools.ensure(image)
        helper = _helper(api, image, volume, labels, "ro", tools, ["sh", "-c", treecheck.MANIFEST_SCRIPT])
        api.start(helper)
        code = api.wait(helper, timeout=deadline.left())["StatusCode"]
        output = bytearray()
        for chunk in api.logs(helper, stdout=True, stderr=False, stream=True):
            output += chunk
            if len(output) > MANIFEST_LIMIT:
                raise RuntimeError_(f"disk {volume} holds too many files to check")
        if code != 0:
            errors = api.logs(helper, stdout=False, stderr=True, tail=5).decode(errors="replace").strip()
            raise RuntimeError_(f"checking disk {volume} failed (exit code {code}): {errors[-500:]}")
        return treecheck.parse(output.decode(errors="surrogateescape"))
    except treecheck.ManifestError as exc:
        raise RuntimeError_(f"checking disk {volume} failed: {exc}") from exc
    except _FAILURES as exc:
        raise RuntimeError_(f"checking disk {volume} failed: {_why(exc)}") from exc
    finally:
        if helper:
            try:
                api.remove_container(helper, force=True, v=True)
            except _FAILURES:
                pass
        api.close()
