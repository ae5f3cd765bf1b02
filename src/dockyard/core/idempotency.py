"""Which requests honour an Idempotency-Key: the POSTs that create or cost something. A
retry with the same key gets the first answer and does nothing again; the server keeps
the answers for a day (api/idempotency.py), the CLI sends a key with each of them and
retries once on a network error (cli/client.py)."""

from __future__ import annotations

import re
from datetime import timedelta

HEADER = "Idempotency-Key"
KEPT_FOR = timedelta(hours=24)
KEY_FORMAT = re.compile(r"[\x21-\x7e]{1,255}")  # visible ASCII, as in a header
# Paths under the API prefix: create, start, clone, save and migrate an instance, create a
# cluster, credit a wallet.
_COVERED = re.compile(r"/instances(/[^/]+/(start|clone|save|migrate))?|/clusters|/billing/credit")


def covers(method: str, path: str) -> bool:
    return method.upper() == "POST" and _COVERED.fullmatch(path) is not None
