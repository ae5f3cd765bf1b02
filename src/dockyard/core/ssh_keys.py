"""Which SSH public keys users may register: the policy, and reading ssh-keygen's verdict."""

from __future__ import annotations

import re
from dataclasses import dataclass

from dockyard.core.errors import InvalidInput

MIN_RSA_BITS = 2048
ALLOWED_TYPES = {"ED25519", "ECDSA", "RSA", "ED25519-SK", "ECDSA-SK"}
# `ssh-keygen -l` prints: "256 SHA256:abc... comment (ED25519)"
_LINE = re.compile(r"^(\d+) (SHA256:[A-Za-z0-9+/=]+) .*\(([A-Z0-9-]+)\)$")


@dataclass(frozen=True)
class KeyFacts:
    type: str
    bits: int
    fingerprint: str


def read_fingerprint(output: str) -> KeyFacts:
    match = _LINE.match(output.strip())
    if not match:
        raise InvalidInput("public_key: not an OpenSSH public key (expected e.g. 'ssh-ed25519 AAAA... comment')",
                           field="public_key")
    return KeyFacts(type=match.group(3), bits=int(match.group(1)), fingerprint=match.group(2))


def check_policy(facts: KeyFacts) -> None:
    if facts.type not in ALLOWED_TYPES:
        raise InvalidInput(f"public_key: {facts.type} keys are refused; use ed25519, ECDSA or RSA "
                           f"of at least {MIN_RSA_BITS} bits", field="public_key")
    if facts.type == "RSA" and facts.bits < MIN_RSA_BITS:
        raise InvalidInput(f"public_key: this RSA key has {facts.bits} bits; at least {MIN_RSA_BITS} are needed",
                           field="public_key")


def single_line(public_key: str) -> str:
    """One key, one line: authorized_keys must not receive options or a second key."""
    lines = [line for line in public_key.strip().splitlines() if line.strip()]
    if len(lines) != 1:
        raise InvalidInput("public_key: give exactly one key, on one line", field="public_key")
    key = lines[0].strip()
    if not key.startswith(("ssh-", "ecdsa-", "sk-")):
        raise InvalidInput("public_key: must start with its type (ssh-ed25519, ecdsa-sha2-..., ssh-rsa)",
                           field="public_key")
    return key
