"""Environment values marked secret: sealed with Fernet (AES-128-CBC + HMAC-SHA256) under a
key kept in $DOCKYARD_HOME/secret.key (mode 0600), opened only to start the container.
A database leak alone reveals none of them."""

from __future__ import annotations

import json
import os
from pathlib import Path

from cryptography.fernet import Fernet

KEY_FILE = "secret.key"


class SecretBox:
    def __init__(self, home: Path):
        self._fernet = Fernet(_load_or_make_key(home / KEY_FILE))

    def seal(self, env: dict[str, str]) -> str | None:
        return self._fernet.encrypt(json.dumps(env).encode()).decode() if env else None

    def open(self, sealed: str | None) -> dict[str, str]:
        return json.loads(self._fernet.decrypt(sealed.encode())) if sealed else {}


def _load_or_make_key(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)  # nobody but the server's user reads it
        return path.read_bytes().strip()
    key = Fernet.generate_key()
    with os.fdopen(fd, "wb") as out:
        out.write(key)
    return key
