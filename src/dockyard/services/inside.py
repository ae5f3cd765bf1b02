"""`dockyard-shutdown`: an instance stops itself from inside (never releases itself).

At each start the driver gives the container a new random token (`install`): the file
/etc/dockyard/shutdown (root only) holds it with the address to call, and
/usr/local/bin/dockyard-shutdown, a script of the platform's busybox, posts it to the
listener of access/inside.py. The database keeps only the token's SHA-256, so the token
is a credential that only that instance holds, and all it can do is stop that instance.
"""

from __future__ import annotations

import hashlib
import logging
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from dockyard.core.errors import Conflict, Unauthorized
from dockyard.core.kinds import NoticeKind
from dockyard.core.states import Status
from dockyard.db.models import Instance
from dockyard.runtimes.base import BUSYBOX
from dockyard.services import lifecycle, notifications
from dockyard.services.platform import Platform

log = logging.getLogger(__name__)

CONFIG_DIR, CONFIG_NAME = "/etc/dockyard", "shutdown"
NOTICE_KIND = NoticeKind.SHUTDOWN
GATEWAY = "GATEWAY"  # in the address: the instance's default gateway, this host on its own bridge
CAUSE = "stopped from inside the instance (dockyard-shutdown); disks kept, GPUs returned"

SCRIPT = f"""#!{BUSYBOX} sh
# Stop this instance (never release it): its disks are kept, its GPUs go back.
B={BUSYBOX}
conf={CONFIG_DIR}/{CONFIG_NAME}
if [ ! -r "$conf" ]; then
    echo "dockyard-shutdown: $conf is missing (the platform writes it at each start)" >&2
    exit 1
fi
url=$($B sed -n 1p "$conf")
token=$($B sed -n 2p "$conf")
gateway=$($B awk '$2 == "00000000" {{ g = $3; printf "%d.%d.%d.%d", "0x" substr(g, 7, 2), "0x" substr(g, 5, 2), \
"0x" substr(g, 3, 2), "0x" substr(g, 1, 2); exit }}' /proc/net/route)
url=$(echo "$url" | $B sed "s/{GATEWAY}/$gateway/")
# (busybox timeout: this build of wget crashes on its own -T)
if ! $B timeout 30 $B wget -q -O - --header "Authorization: Bearer $token" --post-data "" "$url/stop"; then
    echo "dockyard-shutdown: the platform at $url did not take the stop" >&2
    exit 1
fi
echo
"""


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def address(platform: Platform) -> str:
    settings = platform.settings
    return settings.inside_url or f"http://{GATEWAY}:{settings.inside_port}"


def start_files(platform: Platform, db: Session, instance_id: str) -> tuple[dict[str, tuple[bytes, int]],
                                                                           dict[str, int]]:
    """A new token for this start (the last one stops working, once `db` commits), and the
    files that use it with their folders (paths under /), for the driver's upload."""
    token = secrets.token_urlsafe(32)
    db.get(Instance, instance_id).shutdown_token_hash = _digest(token)
    config = CONFIG_DIR.lstrip("/")
    files = {f"{config}/{CONFIG_NAME}": (f"{address(platform)}\n{token}\n".encode(), 0o600),
             "usr/local/bin/dockyard-shutdown": (SCRIPT.encode(), 0o755)}
    return files, {config: 0o755, "usr/local/bin": 0o755}


def stop_from_inside(platform: Platform, token: str) -> tuple[Instance, bool]:
    """Stop the instance holding `token`; (it, whether this call stopped it)."""
    with platform.sessions.begin() as db:
        instance = db.scalar(select(Instance).where(Instance.shutdown_token_hash == _digest(token))) if token else None
        if instance is None:
            raise Unauthorized("unknown shutdown token (a new one is written at each start)")
    if instance.status == Status.STOPPING:
        return instance, False
    if instance.status != Status.RUNNING:
        raise Conflict(f"instance {instance.name} is {instance.status}, not running")
    message = f"instance {instance.name} was stopped ({CAUSE})."
    done = lifecycle.transition(platform, instance.id, Status.RUNNING, Status.STOPPING, CAUSE,
                                expected_container=instance.container_id, auto_stop_warned_at=None,
                                also=lambda db: notifications.post(db, instance.owner_id, NOTICE_KIND, message))
    if not done:
        raise Conflict(f"instance {instance.name} changed state meanwhile; nothing was done")
    return instance, True
