"""Instances on a container engine (Docker, and the fake engine that mimics it): the
lifecycle the driver asks for, made of the engine's object-level calls (runtimes/base.py).

A container engine fixes a container's devices and published ports when it makes it, so a
change of GPUs or a taken SSH port means a new container; the system disk is kept as an
image first (flattened past the layer limit) and the new container starts from it. Those
decisions are the engine's and live here; the driver only says what the instance should
have and records what it is told.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Iterator

from dockyard.runtimes.base import (ContainerGone, ContainerInfo, ContainerSpec, ContainerStats, ExecStream, Runtime,
                                    RuntimeError_)

log = logging.getLogger(__name__)


# The one key of the stored state the platform reads itself: whether, and in which
# container, the instance is held (db/models.py Instance.container_id).
CONTAINER_KEY = "container"


@dataclass(frozen=True)
class Held:
    """What the engine keeps of one instance, recorded by the platform and handed back at
    every call: its container, the GPUs that container was made with, and its system disk
    kept as an image when the container had to be made again."""

    container_id: str | None = None
    gpus: tuple[str, ...] = ()
    system_disk: str | None = None

    def state(self) -> dict:
        """All of it, as the platform stores it (opaque to it but for CONTAINER_KEY)."""
        return {CONTAINER_KEY: self.container_id, "gpus": list(self.gpus), "system_disk": self.system_disk}

    @classmethod
    def of(cls, state: dict | None) -> Held:
        state = state or {}
        return cls(state.get(CONTAINER_KEY), tuple(state.get("gpus") or ()), state.get("system_disk"))


# Called with the new state before the step that could lose it (a removal), so a crash
# between the two loses nothing: the next drive starts from what was recorded.
Record = Callable[[Held], None]


class ContainerInstances:
    def __init__(self, runtime: Runtime, labels: dict[str, str], disk_repository: str, stop_timeout_s: int,
                 max_layers: int):
        self.runtime, self.labels = runtime, labels
        self.disk_repository, self.stop_timeout_s, self.max_layers = disk_repository, stop_timeout_s, max_layers

    def provision(self, instance_id: str, name: str, gpus: list[str], held: Held, record: Record) -> Held:
        """Keep the instance's container if it has exactly `gpus`: the recorded one, or one
        called `name` that a process killed before recording it made (adopted, recorded).
        A container with other GPUs gives its system disk to an image and goes. Returns
        what is held now; a container_id of None means `create` must make one (from
        `system_disk` when set). Idempotent. Raises ContainerGone when the recorded
        container vanished: its system disk went with it."""
        wanted = tuple(sorted(gpus))
        if held.container_id:
            if self.runtime.inspect(held.container_id) is None:
                raise ContainerGone("the instance's container (its system disk) vanished from the node")
            if tuple(sorted(held.gpus)) == wanted:
                return held
            return self.keep_disk(instance_id, held, record)
        unrecorded = self.runtime.inspect(name)
        if unrecorded is None:
            return held
        if unrecorded.labels.get("dockyard.gpus") != ",".join(wanted):
            self.runtime.remove(unrecorded.id)  # never started with these GPUs: nothing of the user's on it
            return held
        held = Held(unrecorded.id, wanted, held.system_disk)
        record(held)
        return held

    def create(self, spec: ContainerSpec, held: Held, record: Record) -> Held:
        """Make the container `spec` says (its image: `held.system_disk` or the instance's
        image) and record it before anything else can happen to it."""
        self.runtime.ensure_image(spec.image)
        held = Held(self.runtime.create(spec), tuple(sorted(spec.gpu_uuids)), held.system_disk)
        record(held)
        return held

    def start(self, held: Held) -> None:
        """Start the container. Raises PortTaken when a port it publishes is held by
        another program on the node, RuntimeError_ when it exits at once."""
        self.runtime.start(held.container_id)
        info = self.runtime.inspect(held.container_id)
        if info is None or not info.running:
            raise RuntimeError_(f"the container exited at once (exit code {info.exit_code if info else '?'})")

    def remake(self, instance_id: str, held: Held, ran_before: bool, record: Record) -> Held:
        """Let go of the container so that the next `provision` and `create` make it again
        (with other ports): its system disk is kept first if it ever ran."""
        if ran_before:
            return self.keep_disk(instance_id, held, record)
        cleared = Held(None, (), held.system_disk)
        record(cleared)
        self.runtime.remove(held.container_id)
        return cleared

    def keep_disk(self, instance_id: str, held: Held, record: Record) -> Held:
        """Stop the container, keep its system disk as an image and remove it."""
        self.runtime.stop(held.container_id, timeout=self.stop_timeout_s)
        tag = f"{instance_id}-{int(time.time() * 1000)}"
        saved = self.runtime.keep_system_disk(held.container_id, self.disk_repository, tag, self.max_layers)
        kept = Held(None, (), saved)
        record(kept)
        self.runtime.remove(held.container_id)
        return kept

    def drop_old_disks(self, instance_id: str, held: Held) -> None:
        """Untag system disks older than the one held (committed images carry the
        container's labels, so they are found by instance). Only `keep_disk` makes them,
        and it records the disk it made: with none held there is nothing to look for."""
        if not held.system_disk:
            return
        for ref in self.runtime.list_images({**self.labels, "dockyard.instance": instance_id}):
            if ref != held.system_disk:
                try:
                    self.runtime.remove_image(ref)
                except RuntimeError_ as exc:  # only a name; the next start tries again
                    log.info("could not untag %s: %s", ref, exc)

    def stop(self, held: Held) -> None:
        """Stop the container; its disks stay. Nothing held is fine. Raises ContainerGone
        when the recorded container vanished."""
        if not held.container_id:
            return
        if self.runtime.inspect(held.container_id) is None:
            raise ContainerGone("the instance's container (its system disk) vanished from the node")
        self.runtime.stop(held.container_id, timeout=self.stop_timeout_s)

    def destroy(self, instance_id: str, name: str, held: Held) -> None:
        """Remove the container (the recorded one and any called `name`) and every kept
        system disk. Missing is fine. Data disks are the caller's to keep or remove."""
        for container in {held.container_id, name} - {None}:
            self.runtime.remove(container)
        for ref in self.runtime.list_images({**self.labels, "dockyard.instance": instance_id}):
            self.runtime.remove_image(ref)

    # ---- reaching a held instance -------------------------------------------------------
    # Each call takes what is held with a container in it; each has a deadline and a size
    # limit, since what runs inside is the tenant's.

    def observe(self, held: Held) -> ContainerInfo | None:
        """The container's state now; None when nothing is held or it vanished."""
        return self.runtime.inspect(held.container_id) if held.container_id else None

    def kill(self, held: Held) -> None:
        """Stop the container without waiting for it to end on its own. Missing is fine."""
        if held.container_id:
            self.runtime.stop(held.container_id, timeout=0)

    def exec(self, held: Held, command: list[str], timeout_s: float, max_bytes: int) -> tuple[int, bytes]:
        """Run a program of the image for the platform (a fixed PATH); exit code -1 when
        it was stopped at `timeout_s`, its output cut at `max_bytes`."""
        return self.runtime.exec(held.container_id, command, timeout_s=timeout_s, max_bytes=max_bytes)

    def exec_stream(self, held: Held, command: list[str], timeout_s: float, max_bytes: int) -> ExecStream:
        """A user's command, in the container's own environment, its output as it comes."""
        return self.runtime.exec_stream(held.container_id, command, timeout_s, max_bytes)

    def tool(self, held: Held, args: list[str], timeout_s: float, max_bytes: int) -> tuple[int, bytes]:
        """One of the platform's own tools (`cat`, `df`, `ps`...), never a program the
        tenant could have replaced."""
        return self.runtime.tool(held.container_id, args, timeout_s=timeout_s, max_bytes=max_bytes)

    def logs(self, held: Held, tail: int, follow: bool, max_bytes: int) -> Iterator[bytes]:
        """The instance's output, streamed and cut at `max_bytes`."""
        return self.runtime.logs(held.container_id, tail=tail, follow=follow, max_bytes=max_bytes)

    def stats(self, held: Held) -> ContainerStats | None:
        """One reading of its resource counters; None when it is not running."""
        return self.runtime.stats(held.container_id)

    def system_disk_used(self, held: Held) -> int | None:
        """Bytes the instance wrote over its image; None when its container is gone."""
        return self.runtime.system_disk_used(held.container_id)

    def read_file(self, held: Held, path: str) -> bytes | None:
        """A regular file's content (bounded), or None when there is none."""
        return self.runtime.read_file(held.container_id, path)

    def put_files(self, held: Held, files: dict[str, tuple[bytes, int]], dirs: dict[str, int] | None = None) -> None:
        """Write `files` (path under / -> (content, mode)) and make `dirs` with their modes,
        owned by root, before the instance's own programs start reading them."""
        self.runtime.put_files(held.container_id, "", files, "/", dirs=dirs)

    # ---- the system disk as an image ------------------------------------------------------

    def copy_system_disk(self, held: Held, repository: str, tag: str, labels: dict[str, str]) -> str:
        """The system disk as it is now, as an image another instance starts from (a clone);
        the instance may go on running."""
        self.runtime.commit(held.container_id, repository, tag, labels=labels)
        return f"{repository}:{tag}"

    def save_image(self, held: Held, repository: str, tag: str, labels: dict[str, str]) -> str:
        """The system disk as an image for others: without this instance's secrets."""
        return self.runtime.save_image(held.container_id, repository, tag, labels=labels)

    def system_disk_image(self, held: Held, repository: str, tag: str, labels: dict[str, str]) -> str:
        """The system disk as an image this instance starts from elsewhere (a migration),
        flattened past the engine's layer limit."""
        return self.runtime.keep_system_disk(held.container_id, repository, tag, self.max_layers, labels)
