"""Lock the Python stack of a catalog image: `images/stack.in` resolved with the entry's
torch and Python into `images/locks/<name>.txt` (exact versions, one a line).

The lock leaves out torch itself (the Dockerfile pins `torch==TORCH_VERSION+CUDA_VARIANT`)
and what torch pins exactly per CUDA variant (the `nvidia-*` wheels, triton): the same
stack lock serves whichever index the torch wheel comes from. Resolution is uv's, for the
entry's Python on manylinux x86_64, so it runs on any machine that reaches the index.

    python -m dockyard.runtimes.image_lock pytorch-2.13-cpu [--index-url URL]
    python -m dockyard.runtimes.image_lock --all
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from dockyard.core.catalog import CatalogEntry, find, load_catalog

PYPI = "https://pypi.org/simple"
RESOLVE_TIMEOUT_S = 600
_TORCH_PINNED = re.compile(r"^(torch|triton|nvidia-[a-z0-9-]+)==", re.IGNORECASE)


def images_dir() -> Path:
    return Path(__file__).resolve().parents[3] / "images"


def lock_path(entry: CatalogEntry, root: Path | None = None) -> Path:
    return (root or images_dir()) / "locks" / f"{entry.name}.txt"


def stack_lines(text: str) -> list[str]:
    """The `name==version` lines of a lock (comments and blank lines dropped)."""
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def lock_digest(text: str) -> str:
    """sha256 of the lock's package lines: the same stack gives the same digest."""
    return hashlib.sha256("\n".join(stack_lines(text)).encode()).hexdigest()


def torch_requirement(entry: CatalogEntry, use_local_wheels: bool) -> str:
    version = entry.build["torch_version"]
    # Without the local wheel the resolution uses PyPI's torch of that release: its loose
    # dependencies (filelock, sympy, jinja2, ...) are the same for every CUDA variant.
    return f"torch=={version}+{entry.build['cuda_variant']}" if use_local_wheels else f"torch=={version}"


def resolve(entry: CatalogEntry, stack_in: Path, index_url: str) -> str:
    """Run uv's resolver for the entry; returns the lock's text."""
    uv = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
    wheels = entry.build.get("wheels_dir")
    use_local = bool(wheels) and any(Path(wheels).glob(f"torch-{entry.build['torch_version']}+*.whl"))
    with tempfile.TemporaryDirectory(prefix="dockyard-lock-") as tmp:
        torch_in = Path(tmp) / "torch.in"
        torch_in.write_text(torch_requirement(entry, use_local) + "\n")
        out = Path(tmp) / "lock.txt"
        command = [uv, "pip", "compile", str(stack_in), str(torch_in), "--quiet", "--no-header",
                   "--no-annotate", "--native-tls", "--python-version", entry.python,
                   "--python-platform", "x86_64-manylinux_2_28", "--index-url", index_url,
                   "-o", str(out)]
        if use_local:
            command += ["--find-links", wheels]
        subprocess.run(command, check=True, timeout=RESOLVE_TIMEOUT_S, env={**os.environ, "UV_NO_CACHE": "1"})
        pins = [line for line in stack_lines(out.read_text()) if not _TORCH_PINNED.match(line)]
    header = (f"# {entry.name}: the Python stack of {entry.ref} (Python {entry.python}, "
              f"torch {entry.framework_version} {entry.build['cuda_variant']}).\n"
              f"# Made by `python -m dockyard.runtimes.image_lock {entry.name}` from images/stack.in;\n"
              f"# torch and the wheels it pins exactly (nvidia-*, triton) are not listed.\n")
    return header + "\n".join(pins) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dockyard.runtimes.image_lock",
                                     description="Lock the Python stack of catalog images.")
    parser.add_argument("names", nargs="*", help="catalog entry names")
    parser.add_argument("--all", action="store_true", help="every entry of the catalog")
    parser.add_argument("--index-url", default=PYPI)
    args = parser.parse_args(argv)
    catalog = load_catalog()
    entries = catalog if args.all else [find(catalog, name) for name in args.names]
    if not entries:
        parser.error("name an entry or pass --all")
    for entry in entries:
        text = resolve(entry, images_dir() / "stack.in", args.index_url)
        path = lock_path(entry)
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
        print(f"{path}: {len(stack_lines(text))} packages, sha256 {lock_digest(text)[:12]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
