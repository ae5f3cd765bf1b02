"""Checking that a copied disk is its source (a migration, docs/migrate.md). Pure: the
lines a helper prints over each side (MANIFEST_SCRIPT, run by the platform's busybox)
are parsed and compared here. Every entry's type, mode and owner, every non-directory's
size, and one MD5 over the MD5 of every regular file (sorted by path) must agree.
Directory sizes are left out: they depend on the file system, not on what it holds.

MD5, because the check is against damage in the copy (a stream cut short, an engine
that wrote less), not against a forger: the tenant who owns the disk cannot touch either
side while it is copied (the instance is stopped, its disks mounted read-only by the
platform's helpers), so no one chooses what a damaged copy holds. The platform's busybox
hashes MD5 about three times as fast as SHA-256, and both sides read every byte."""

from __future__ import annotations

from dataclasses import dataclass

# Run with `sh -c` in a helper whose /d is the disk and $B the platform's busybox.
MANIFEST_SCRIPT = """set -o pipefail
cd /d || exit 3
$B find . -mindepth 1 -type d -exec $B stat -c 'directory|-|%a|%u:%g|%n' {} + || exit 4
$B find . ! -type d -exec $B stat -c '%F|%s|%a|%u:%g|%n' {} + || exit 4
sums=$($B find . -type f -exec $B md5sum {} + | $B sort | $B md5sum) || exit 5
echo "tree|${sums%% *}"
"""


class ManifestError(ValueError):
    """The helper's output is not a manifest."""


@dataclass(frozen=True)
class Manifest:
    entries: dict[str, tuple[str, str, str, str]]  # path -> (type, size, mode, owner)
    digest: str  # over the contents of every regular file

    @property
    def files(self) -> int:
        return sum(1 for kind, *_ in self.entries.values() if kind != "directory")

    @property
    def bytes(self) -> int:
        return sum(int(size) for kind, size, *_ in self.entries.values() if kind == "regular file")


def parse(text: str) -> Manifest:
    entries: dict[str, tuple[str, str, str, str]] = {}
    digest = None
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("tree|"):
            digest = line[5:]
            continue
        parts = line.split("|", 4)
        if len(parts) != 5:
            raise ManifestError(f"not a manifest line: {line[:200]!r}")
        kind, size, mode, owner, path = parts
        # "regular empty file" is busybox's name for a regular file of size 0.
        entries[path] = ("regular file" if kind == "regular empty file" else kind, size, mode, owner)
    if not digest or len(digest) != 32:
        raise ManifestError("the manifest has no tree checksum")
    return Manifest(entries, digest)


def differences(source: Manifest, copy: Manifest, limit: int = 5) -> list[str]:
    """What differs between a disk and its copy, in words (at most `limit` entries plus
    the checksum); empty when the copy is whole."""
    found = []
    for path in sorted(source.entries.keys() | copy.entries.keys()):
        want, have = source.entries.get(path), copy.entries.get(path)
        if have is None:
            found.append(f"{path} is missing")
        elif want is None:
            found.append(f"{path} is not on the source")
        elif want != have:
            names = ("type", "size", "mode", "owner")
            what = ", ".join(f"{n} {a} -> {b}" for n, a, b in zip(names, want, have) if a != b)
            found.append(f"{path}: {what}")
        if len(found) == limit:
            break
    if source.digest != copy.digest:
        found.append("the checksum of the files' contents differs")
    return found
