"""Disks of a fixed size: an ext4 file system in a sparse image file per disk, loop-mounted
on the server's host under its state dir. Containers reach a disk through a Docker volume
that binds its mount point, so a write past the size fails with ENOSPC on that disk alone.

Image files are sparse (a new 50 GB disk takes a few MB of the host's disk) and the file
system is grown a little past N GiB so that `df` inside shows N GiB. Every step is
idempotent: `ensure` mounts a disk again after a host reboot, and an image file appears
under its final name only once it holds a file system.

Making one takes a few hundred ms (mkfs, then e2fsck and resize2fs to fit): too long for
a create, so a spare of the usual size is kept made and mounted in the background, and a
new disk of that size is the spare (an empty file system, never anyone's data): its image
renamed, and its mount point reached through a link named as the disk (a mount point
cannot be renamed, and a mount on the create's path costs more than the rest of it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import secrets
import threading
import time
from pathlib import Path

from dockyard.runtimes.base import RuntimeError_

GIB = 1024**3
COMMAND_TIMEOUT_S = 600  # e2fsck and resize2fs of a large disk take a while
TOOLS = ("mkfs.ext4", "resize2fs", "e2fsck", "losetup", "mount", "umount")
DETACH_WAIT_S = 15
SPARE_PREFIX = ".spare-"


class DiskTooSmall(RuntimeError_):
    """A shrink below the data a disk holds."""


def _run(command: list[str], ok: tuple[int, ...] = (0,)) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise RuntimeError_(f"{command[0]} took longer than {COMMAND_TIMEOUT_S} s") from None
    if done.returncode not in ok:
        raise RuntimeError_(f"{command[0]} failed: {(done.stderr or done.stdout).strip()[-300:]}")
    return done.stdout


def unavailable_reason(engine_url: str) -> str | None:
    """Why disks of a fixed size cannot be made for an engine, or None when they can."""
    if not engine_url.startswith("unix://"):
        return "the node's engine is not on the server's host (loop disks are mounted there)"
    if os.geteuid() != 0:
        return "the server does not run as root (loop mounts need root)"
    if not Path("/dev/loop-control").exists():
        return "the host has no loop devices (/dev/loop-control is missing)"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not installed (Debian package e2fsprogs, mount)"
    return None


def _loop_device(image: Path) -> str | None:
    """The loop device backed by `image`, if one is attached. Read from sysfs (no process
    at every mount); `losetup -j` decides whenever sysfs names a backing file this process
    cannot look at (another mount namespace, a deleted file), since missing an attached
    device would put a second one over the same file."""
    found = _loop_device_sysfs(image)
    if found is not False:
        return found
    found = _run(["losetup", "-n", "-O", "NAME", "-j", str(image)]).split()
    return found[0] if found else None


def _loop_device_sysfs(image: Path) -> str | None | bool:
    """As `_loop_device`, from /sys/block/loop*/loop/backing_file (present only while a
    device is attached); False when it cannot say."""
    try:
        wanted = image.stat()
        devices = [name for name in os.listdir("/sys/block") if name.startswith("loop")]
    except OSError:
        return False
    for device in devices:
        entry = f"/sys/block/{device}/loop/backing_file"
        try:
            with open(entry) as f:
                path = f.read().rstrip("\n")
        except FileNotFoundError:  # not attached
            continue
        except OSError:
            return False
        try:
            st = os.stat(path)
        except OSError:  # detached meanwhile, or a path we cannot reach: ask losetup
            if os.path.exists(entry):
                return False
            continue
        if (st.st_dev, st.st_ino) == (wanted.st_dev, wanted.st_ino):
            return "/dev/" + device
    return None


def _drop_lost_found(point: Path) -> None:
    """Users see their disk as they left it: ext4's empty lost+found (which mkfs and e2fsck
    make) is removed; one with files in it stays."""
    try:
        (point / "lost+found").rmdir()
    except OSError:
        pass


class LoopDisks:
    def __init__(self, root: Path, engine_url: str, spare_size_gb: int | None = None):
        """`spare_size_gb`: the size most disks have, kept one made ahead (None: none)."""
        self.root = root
        self.reason = unavailable_reason(engine_url)
        self.spare_size_gb = spare_size_gb
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._refilling = threading.Lock()
        for partial in root.glob(f"{SPARE_PREFIX}*.new"):  # a spare a crash left half made
            point = partial.with_suffix("")
            self._umount(point)
            partial.unlink(missing_ok=True)
            if point.is_dir():
                point.rmdir()
        self.refill()

    def _spares(self, size_gb: int) -> list[Path]:
        return sorted(self.root.glob(f"{SPARE_PREFIX}{size_gb}g-*.img"))

    def refill(self) -> None:
        """Make a spare of the usual size in the background, if there is none."""
        if self.reason or self.spare_size_gb is None or self._spares(self.spare_size_gb):
            return
        if self._refilling.acquire(blocking=False):
            threading.Thread(target=self._make_spare, name="spare-disk", daemon=True).start()

    def _make_spare(self) -> None:
        """A spare appears under its name only once it is whole and mounted: a taker never
        mounts it beside this thread."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            name = f"{SPARE_PREFIX}{self.spare_size_gb}g-{secrets.token_hex(4)}.img"
            self._make(self.root / name, self.spare_size_gb, mount=True)
        except (RuntimeError_, OSError):  # the host's disk full, a tool failing
            pass  # the next disk is made in place; the next take tries again
        finally:
            self._refilling.release()

    def _take_spare(self, name: str, size_gb: int, refill: bool) -> bool:
        """Make disk `name` the spare: the link to the spare's mount point first, then the
        image renamed (atomic: two takers cannot both get it). A crash between the two
        leaves a link to a spare that is still a spare, replaced at the next take."""
        link = self.root / name
        if link.is_dir() and not link.is_symlink():  # an empty mount point a crash left behind
            try:
                link.rmdir()
            except OSError:
                return False
        for spare in self._spares(size_gb):
            _link(link, spare.with_suffix("").name)
            try:
                spare.rename(self.image(name))
            except FileNotFoundError:
                continue
            if refill:
                self.refill()
            return True
        if link.is_symlink():
            link.unlink()
        return False

    def _make(self, image: Path, size_gb: int, mount: bool = False) -> None:
        """A file system of `size_gb` in `image`, which appears only once it is whole (and
        with `mount`, mounted on its mount point, empty)."""
        partial = image.with_suffix(".new")
        partial.unlink(missing_ok=True)
        with open(partial, "wb") as f:
            f.truncate(size_gb * GIB)  # sparse: nothing is written up front
        # -m 0: no blocks kept back for root (users are root in their instances).
        _run(["mkfs.ext4", "-q", "-F", "-m", "0", "-E", "lazy_itable_init=1,lazy_journal_init=1", str(partial)])
        self._fit(partial, size_gb)
        if mount:
            point = image.with_suffix("")
            self._mount(partial, point)
            _drop_lost_found(point)
        partial.rename(image)

    def image(self, name: str) -> Path:
        return self.root / f"{name}.img"

    def mountpoint(self, name: str) -> Path:
        """Where the disk is mounted: a directory of its name, or the spare's it was."""
        return Path(os.path.realpath(self.root / name))

    def exists(self, name: str) -> bool:
        return self.image(name).exists()

    def _lock(self, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(name, threading.Lock())

    def _check(self) -> None:
        if self.reason:
            raise RuntimeError_(f"disks of a fixed size cannot be made on this node: {self.reason} "
                                "(an operator may turn size limits off with sized_disks = false)")

    def ensure(self, name: str, size_gb: int, refill: bool = True) -> Path:
        """Make the disk if it is missing and mount it if it is not; its mount point.
        `refill` False: a spare taken is replaced only at the next `refill` (a start calls
        it once the container is up, so that making one never competes with the start)."""
        self._check()
        with self._lock(name):
            image = self.image(name)
            if not image.exists():
                self.root.mkdir(parents=True, exist_ok=True)
                if not self._take_spare(name, size_gb, refill):
                    self._make(image, size_gb)
                    self._mount(image, self.mountpoint(name))
                    _drop_lost_found(self.mountpoint(name))
            self._mount(image, self.mountpoint(name))  # again after a reboot
            return self.mountpoint(name)

    def _mount(self, image: Path, point: Path) -> None:
        if os.path.ismount(point):
            return
        point.mkdir(parents=True, exist_ok=True)
        # A loop device still attached (the engine's own bind of it lingers) is mounted
        # again as it is: a second loop device over the same file would corrupt it.
        device = _loop_device(image)
        # noinit_itable: the image is sparse, so unwritten inode tables already read as zeros.
        options = "nodev,noinit_itable" if device else "loop,nodev,noinit_itable"
        _run(["mount", "-t", "ext4", "-o", options, device or str(image), str(point)])

    def _detach(self, image: Path, point: Path) -> None:
        """Unmount, and wait until nothing else holds the file system (the engine lets go
        of a stopped container's volume a moment later): offline work needs it alone."""
        self._umount(point)
        deadline = time.monotonic() + DETACH_WAIT_S
        while _loop_device(image):
            if time.monotonic() > deadline:
                self._mount(image, point)
                raise RuntimeError_(f"disk {image.stem} is still in use on the node; try again in a moment")
            time.sleep(0.2)

    @staticmethod
    def _umount(point: Path) -> None:
        if os.path.ismount(point):
            _run(["umount", str(point)])

    def _size(self, image: Path) -> int:
        """What `df` shows as the size of the (unmounted) file system in `image`."""
        point = image.with_suffix(".measure")
        self._mount(image, point)
        try:
            st = os.statvfs(point)
            return st.f_blocks * st.f_frsize
        finally:
            self._detach(image, point)
            point.rmdir()

    def _fit(self, image: Path, size_gb: int) -> None:
        """Grow the unmounted file system in `image` until it offers `size_gb` GiB: ext4's
        own tables and journal take a few percent. Offline: growing a mounted ext4 needs
        CAP_SYS_RESOURCE, which a server in a container may lack."""
        wanted = size_gb * GIB
        for _ in range(4):
            have = self._size(image)
            if have >= wanted:
                return
            missing = wanted - have
            step = -(-(missing + missing // 32) // (4 << 20)) * (4 << 20)  # a bit more, in 4 MiB
            os.truncate(image, image.stat().st_size + step)
            # resize2fs wants a check after every mount (the measuring one included).
            _run(["e2fsck", "-f", "-y", str(image)], ok=(0, 1))
            _run(["resize2fs", str(image)])
        raise RuntimeError_(f"disk {image.stem} could not be grown to {size_gb} GB")

    def usage(self, name: str) -> tuple[int, int]:
        """(size, used) in bytes of a mounted disk, as `df` shows them."""
        st = os.statvfs(self.mountpoint(name))
        return st.f_blocks * st.f_frsize, (st.f_blocks - st.f_bfree) * st.f_frsize

    def resize(self, name: str, size_gb: int) -> None:
        """Grow or shrink to `size_gb`, offline: no running container may have the disk.
        A shrink below the data in it raises DiskTooSmall and changes nothing."""
        self._check()
        with self._lock(name):
            image, point = self.image(name), self.mountpoint(name)
            if not image.exists():
                raise RuntimeError_(f"disk {name} has no image file on this node")
            self._mount(image, point)
            size, used = self.usage(name)
            wanted = size_gb * GIB
            if used > wanted * 0.97:  # ext4 needs some room for its own blocks
                raise DiskTooSmall(f"it holds {used / GIB:.2f} GB of data, more than {size_gb} GB can keep")
            self._detach(image, point)
            try:
                _run(["e2fsck", "-f", "-y", str(image)], ok=(0, 1))  # 1: errors corrected
                if wanted < size:
                    try:
                        _run(["resize2fs", str(image), f"{wanted // 1024}K"])
                    except RuntimeError_ as exc:
                        raise DiskTooSmall(f"its files do not fit in {size_gb} GB ({exc})") from None
                    os.truncate(image, wanted)
                self._fit(image, size_gb)
            finally:
                self._mount(image, point)
                _drop_lost_found(point)

    def remove(self, name: str) -> None:
        with self._lock(name):
            link = self.root / name
            if link.is_symlink() and not self.image(name).exists():
                link.unlink()  # a take a crash cut short: the spare it names is someone else's now
                return
            point = self.mountpoint(name)
            self._umount(point)
            self.image(name).unlink(missing_ok=True)
            self.image(name).with_suffix(".new").unlink(missing_ok=True)
            if point.exists():
                point.rmdir()
            if link.is_symlink():
                link.unlink()


def _link(link: Path, target: str) -> None:
    """`link` -> `target`, replacing any link there in one step."""
    staged = link.with_name(f".{link.name}.{secrets.token_hex(4)}.link")
    staged.symlink_to(target)
    os.replace(staged, link)
