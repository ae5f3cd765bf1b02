"""What every step of the driver reads besides the instance: the platform, the pool its
self-tests run on, and what it learned of the nodes."""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass, field

from dockyard.services.platform import Platform


@dataclass
class Context:
    platform: Platform
    checks: Executor
    # SSH ports found held by other programs, per node: not handed out again.
    taken_ports: dict[str, set[int]] = field(default_factory=dict)
