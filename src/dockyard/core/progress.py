"""How far a long operation got, read from the lines it prints. Pure: a build's "Step N/M"
and a pull's byte counts (summed over its layers) become one percentage, carried in the
line text itself so the CLI's stream and the console's progress bar read the same lines."""

from __future__ import annotations

import re

_STEP = re.compile(r"^Step (\d+)/(\d+) :")
_PERCENT = re.compile(r" · (\d{1,3})%$")


def with_percent(text: str, percent: float) -> str:
    return f"{text} · {percent:.0f}%"


def percent_of(line: str) -> float | None:
    """The percentage a line reports: a build step (the steps before it are done), or
    one added by `with_percent`; None when it reports none."""
    step = _STEP.match(line)
    if step:
        done, total = int(step.group(1)) - 1, int(step.group(2))
        return 100.0 * done / total if total else None
    found = _PERCENT.search(line)
    return min(100.0, float(found.group(1))) if found else None


class PullProgress:
    """Feed Docker's pull events in order; `percent` is the bytes downloaded over the
    bytes to download, for the layers whose size is known so far."""

    def __init__(self) -> None:
        self._layers: dict[str, tuple[int, int]] = {}  # layer id -> (downloaded, total)

    def feed(self, event: dict) -> float | None:
        layer, status = event.get("id"), event.get("status", "")
        detail = event.get("progressDetail") or {}
        if layer and status == "Downloading" and detail.get("total"):
            self._layers[layer] = (int(detail.get("current") or 0), int(detail["total"]))
        elif layer in self._layers and status in ("Download complete", "Extracting", "Pull complete"):
            total = self._layers[layer][1]
            self._layers[layer] = (total, total)
        return self.percent

    @property
    def percent(self) -> float | None:
        total = sum(t for _, t in self._layers.values())
        return 100.0 * sum(d for d, _ in self._layers.values()) / total if total else None
