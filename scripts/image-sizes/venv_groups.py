"""What each package of images/stack.in adds to /opt/venv beyond torch, JupyterLab,
ipykernel, numpy and the packages counted before it, in MB of installed files (run inside
the image by scripts/image-sizes/measure.sh)."""

import os
import re
from importlib import metadata

from packaging.markers import Marker

BEFORE = ["torch", "jupyterlab", "ipykernel", "numpy", "pip", "setuptools"]  # the image before the stack
STACK = ["pandas", "matplotlib", "scikit-learn", "tqdm", "ipywidgets", "tensorboard",
         "jupyter-resource-usage", "jupyter-server-proxy"]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


DISTS = {canonical(d.metadata["Name"]): d for d in metadata.distributions()}


def size(name: str) -> int:
    total = 0
    for file in DISTS[name].files or []:
        try:
            total += os.path.getsize(DISTS[name].locate_file(file))
        except OSError:
            pass
    return total


def requirements(name: str) -> list[str]:
    found = []
    for requirement in DISTS[name].requires or []:
        spec, _, marker = requirement.partition(";")
        if marker and not Marker(marker).evaluate({"extra": ""}):
            continue
        found.append(canonical(re.split(r"[ <>=!~\[(]", spec.strip(), maxsplit=1)[0]))
    return found


def closure(roots: list[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name not in seen and name in DISTS:
            seen.add(name)
            todo += requirements(name)
    return seen


counted = closure(BEFORE)
print(f"before the stack: {sum(map(size, counted)) / 1e6:.1f}")
for top in STACK:
    added = closure([top]) - counted
    counted |= added
    largest = ", ".join(f"{n} {size(n) / 1e6:.0f}" for n in sorted(added, key=size, reverse=True)[:4])
    print(f"{top}: {sum(map(size, added)) / 1e6:.1f} ({largest})")
print("not reached from these:", ", ".join(sorted(set(DISTS) - counted)) or "-")
