"""The platform's own programs inside instances: a read-only volume per node.

Everything the platform runs in a tenant's container (reading connections, measuring
the data disk, stopping its own commands, scrubbing a saved image) runs a static busybox
from this volume by absolute path, so a tenant who replaces `sh`, `cat` or `df` in the
image changes nothing the platform relies on. The volume is mounted read-only and its
name carries a hash of its contents, so a new version never mixes with an old one.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import threading
import time
from pathlib import Path

from docker.errors import APIError, NotFound

from dockyard.runtimes.base import BUSYBOX, TOOLS_MOUNT, RuntimeError_
from dockyard.runtimes.docker_errors import engine_error

RUN = f"{TOOLS_MOUNT}/run"
END = f"{TOOLS_MOUNT}/end"
# What every platform exec sees instead of the image's PATH.
FIXED_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# run CMD...: print this command's pid, then become CMD. A process that docker exec starts
# leads its own process group, so `end` can stop it and what it started. A bare name is
# looked up in PATH here: busybox's own exec would prefer its applets to the image's.
_RUN_SCRIPT = f"""#!{BUSYBOX} sh
echo $$
command=$1
shift
case $command in
*/*) ;;
*)
    IFS=:
    for folder in $PATH; do
        if [ -f "$folder/$command" ] && [ -x "$folder/$command" ]; then command=$folder/$command; break; fi
    done
    unset IFS
    ;;
esac
exec "$command" "$@"
"""

# end PID: stop a command that `run` started, with everything it started.
_END_SCRIPT = f"""#!{BUSYBOX} sh
B={BUSYBOX}
tree() {{
    echo "$1"
    for child in $($B ps -o pid,ppid | $B awk -v p="$1" '$2 == p {{ print $1 }}'); do tree "$child"; done
}}
$B kill -STOP -- "-$1" "$1" 2>/dev/null
$B kill -KILL -- "-$1" $(tree "$1") 2>/dev/null
exit 0
"""


def _contents(busybox: Path) -> dict[str, tuple[bytes, int]]:
    try:
        binary = busybox.read_bytes()
    except OSError as exc:
        raise RuntimeError_(f"the platform's busybox {busybox} is missing (Debian package busybox-static): {exc}") from exc
    return {"busybox": (binary, 0o755), "run": (_RUN_SCRIPT.encode(), 0o755), "end": (_END_SCRIPT.encode(), 0o755)}


def archive(files: dict[str, tuple[bytes, int]], directory: str | None = None, dir_mode: int = 0o755,
            dirs: dict[str, int] | None = None) -> bytes:
    """A tar of `files` (name -> (content, mode)), owned by root, optionally inside `directory`;
    `dirs` (path -> mode) are folders it sets the mode of, before the files."""
    buffer = io.BytesIO()
    folders = dict(dirs or {})
    if directory:
        folders = {directory: dir_mode, **{f"{directory}/{path}": mode for path, mode in folders.items()}}
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path, mode in sorted(folders.items()):
            info = tarfile.TarInfo(path)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, int(time.time())
            tar.addfile(info)
        for name, (content, mode) in sorted(files.items()):
            info = tarfile.TarInfo(f"{directory}/{name}" if directory else name)
            info.size, info.mode, info.mtime = len(content), mode, int(time.time())
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


class ToolsVolume:
    """Makes (once per engine) and names the tools volume."""

    def __init__(self, client, busybox: Path, labels: dict[str, str] | None = None):
        self.client, self.labels = client, labels or {}
        self._files = _contents(busybox)
        digest = hashlib.sha256()
        for name, (content, mode) in sorted(self._files.items()):
            digest.update(f"{name}:{mode}:{len(content)}:".encode() + content)
        self.name = f"dockyard-tools-{digest.hexdigest()[:12]}"
        self._ready = False
        self._lock = threading.Lock()

    def ensure(self, image: str) -> str:
        """The volume's name, (re)written once per process: writing is idempotent and a
        crash mid-write is healed by the next process. `image` is any image on the
        engine: a container of it is created (never started) to write into the volume."""
        with self._lock:
            if not self._ready:
                self._fill(image)
                self._ready = True
            return self.name

    def _fill(self, image: str) -> None:
        try:
            try:
                self.client.api.inspect_volume(self.name)
            except NotFound:
                self.client.api.create_volume(self.name, labels={**self.labels, "dockyard.tools": "1"})
            helper = self.client.api.create_container(
                image, command=["true"], entrypoint=[], network_disabled=True,
                host_config=self.client.api.create_host_config(binds={self.name: {"bind": "/tools", "mode": "rw"}},
                                                               network_mode="none"))
            try:
                # Files are replaced, not written over: running copies keep their inode.
                self.client.api.put_archive(helper["Id"], "/tools", archive(self._files))
            finally:
                # With its anonymous volumes: a committed system disk's image names its mount points.
                self.client.api.remove_container(helper["Id"], force=True, v=True)
        except APIError as exc:
            raise engine_error(exc, "could not make the platform's tools volume") from exc
