"""Build a catalog image from images/pytorch-cuda with the Docker engine (legacy builder).

The build context is assembled in a temporary folder: the recipe files, `extra-ca.crt`
(an extra CA bundle trusted during the build, e.g. a TLS-intercepting proxy's; empty when
none), `wheels/` (the entry's matching torch wheels from `build.wheels_dir`, hard-linked
when possible, else copied; empty when none) and `stack.lock` (the entry's lock of the
Python stack, `images/locks/<name>.txt`, which also goes into the image's labels).

    python -m dockyard.runtimes.image_build pytorch-2.13-cpu [--extra-ca FILE] [--catalog FILE]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dockyard.core.catalog import LOCK_DIGEST_LABEL, LOCK_LABEL, CatalogEntry, build_args, find, load_catalog
from dockyard.core.errors import DockyardError
from dockyard.runtimes.image_lock import lock_digest, lock_path, stack_lines

RECIPE_FILES = ("Dockerfile", "entrypoint.sh", "dockyard-check", "dockyard_jupyter_auth.py",
                "jupyter-server-proxy.json")
# HTTP read timeout of the build stream: a step may print nothing for minutes (unpacking torch).
BUILD_TIMEOUT_S = 3600


class BuildError(DockyardError):
    """A build the engine refused or that failed; the message ends with the last output."""

    status_code = 500


@dataclass(frozen=True)
class BuiltImage:
    id: str
    ref: str
    size_bytes: int


def recipe_dir() -> Path:
    """images/pytorch-cuda of the source tree (Dockyard is installed editable)."""
    return Path(__file__).resolve().parents[3] / "images" / "pytorch-cuda"


def matching_wheels(wheels_dir: Path, entry: CatalogEntry) -> list[Path]:
    """torch wheels of the entry's version and variant, e.g. torch-2.13.0+cpu-cp311-...whl."""
    version = entry.build["torch_version"]
    variant = entry.build["cuda_variant"]
    wanted = {f"{version}+{variant}"}
    found = []
    for wheel in sorted(wheels_dir.glob("*.whl")):
        parts = wheel.name.split("-")
        if len(parts) >= 5 and parts[0] == "torch" and parts[1] in wanted:
            found.append(wheel)
    return found


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def assemble_context(entry: CatalogEntry, recipe: Path, extra_ca_bundle: Path | None,
                     context: Path) -> list[Path]:
    """Fill `context` with what the Dockerfile copies; returns the wheels put in it."""
    for name in RECIPE_FILES:
        shutil.copy2(recipe / name, context / name)
    (context / "stack.lock").write_text(read_lock(entry, recipe))
    ca = context / "extra-ca.crt"
    if extra_ca_bundle is not None:
        shutil.copyfile(extra_ca_bundle, ca)
    else:
        ca.write_bytes(b"")
    wheels = context / "wheels"
    wheels.mkdir()
    used = []
    if entry.build.get("wheels_dir"):
        source = Path(entry.build["wheels_dir"])
        if not source.is_dir():
            raise BuildError(f"{entry.name}: wheels_dir {source} is not a folder")
        for wheel in matching_wheels(source, entry):
            _link_or_copy(wheel, wheels / wheel.name)
            used.append(wheel)
    return used


def read_lock(entry: CatalogEntry, recipe: Path) -> str:
    path = lock_path(entry, recipe.parent)
    if not path.is_file():
        raise BuildError(f"{entry.name}: no lock at {path}; make it with "
                         f"`python -m dockyard.runtimes.image_lock {entry.name}`")
    return path.read_text()


def lock_labels(lock: str) -> dict[str, str]:
    return {LOCK_LABEL: "\n".join(stack_lines(lock)), LOCK_DIGEST_LABEL: lock_digest(lock)}


def build_image(client, entry: CatalogEntry, recipe_dir: Path, extra_ca_bundle: Path | None,
                on_progress: Callable[[str], None], *, nocache: bool = False) -> BuiltImage:
    """Build `entry` as `entry.ref`; `on_progress` gets each line of the build's output.

    Raises BuildError with the engine's message and the last lines of output when a
    step fails. `nocache` rebuilds every layer.
    """
    with tempfile.TemporaryDirectory(prefix="dockyard-build-") as tmp:
        context = Path(tmp)
        used = assemble_context(entry, Path(recipe_dir), extra_ca_bundle, context)
        labels = lock_labels((context / "stack.lock").read_text())
        for wheel in used:
            on_progress(f"dockyard: using local wheel {wheel}")
        last_lines: list[str] = []
        for item in client.api.build(path=str(context), tag=entry.ref, buildargs=build_args(entry),
                                     labels=labels, decode=True, rm=True, forcerm=True, pull=False,
                                     nocache=nocache, timeout=BUILD_TIMEOUT_S):
            if "error" in item:
                detail = item.get("errorDetail", {}).get("message") or item["error"]
                tail = "\n".join(last_lines[-15:])
                raise BuildError(f"building {entry.ref} failed: {detail.strip()}\n{tail}")
            for line in str(item.get("stream", "")).splitlines():
                line = line.strip()
                if line:
                    last_lines.append(line)
                    del last_lines[:-50]
                    on_progress(line)
    image = client.images.get(entry.ref)
    return BuiltImage(id=image.id, ref=entry.ref, size_bytes=int(image.attrs.get("Size") or 0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dockyard.runtimes.image_build",
                                     description="Build one image of the catalog.")
    parser.add_argument("name", help="catalog entry name, e.g. pytorch-2.13-cpu")
    parser.add_argument("--catalog", type=Path, default=None, help="default: images/catalog.toml")
    parser.add_argument("--extra-ca", type=Path, default=None,
                        help="a CA bundle to trust during the build (TLS-intercepting proxy)")
    parser.add_argument("--no-cache", action="store_true", help="rebuild every layer")
    args = parser.parse_args(argv)

    import docker

    started = time.monotonic()
    entry = find(load_catalog(args.catalog), args.name)
    client = docker.from_env(timeout=3600)
    try:
        built = build_image(client, entry, recipe_dir(), args.extra_ca, lambda line: print(line, flush=True),
                            nocache=args.no_cache)
    except DockyardError as exc:
        print(exc.message, file=sys.stderr)
        return 1
    print(f"built {built.ref} {built.id} ({built.size_bytes / 1e9:.2f} GB) "
          f"in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
