"""What the services are handed of the background work, without depending on who runs
it (background/workers.py owns the threads; a service must not outlive them):

- `Pools`: the thread pools that run work in the background, one per kind, so a long
  kind (a disk copy, an image build) never holds up a short one (a start, a stop);
- `Driving`: what a service may ask of the instance driver (background/driver/).
"""

from __future__ import annotations

import threading
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Callable, Protocol


@dataclass(frozen=True)
class Pools:
    drive: Executor  # the driver's steps (and an image save, which runs like one)
    checks: Executor  # the images' self-tests: a tenant's program, never on the driver's threads
    copies: Executor  # clones' and migrations' disk copies: they can take long
    transfers: Executor  # a migration's source checks, each beside its copy
    prepares: Executor  # image builds and pulls
    metrics: Executor  # the sampler's container reads, side by side
    metrics_disk: Executor  # its disk readings (du can take a while)


class Driving(Protocol):
    def kick(self, instance_id: str) -> None: ...

    def busy(self, instance_id: str) -> bool: ...

    def hold(self, instance_id: str) -> threading.Lock: ...

    def drive(self, instance_id: str) -> None: ...

    def drive_prepared(self, instance_id: str, lock: threading.Lock, prepare: Callable[[], None]) -> None: ...

    def check_environment(self, instance_id: str) -> dict | None: ...
