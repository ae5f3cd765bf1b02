"""Who sent a request: its address as the login guard and the audit see it, behind the
proxies the operator trusts. The API and the console both ask here."""

from __future__ import annotations

import ipaddress
from functools import lru_cache


def client_address(request) -> str:
    """The address of whoever sent the request. X-Forwarded-For (whose last entry is always
    the peer the server saw: the front door appends it) is followed leftwards only through
    the proxies that `trusted_proxies` names; a client cannot claim an address of its own."""
    trusted = _trusted(tuple(request.app.state.platform.settings.trusted_proxies))
    claimed = request.headers.get("x-forwarded-for")
    hops = [h.strip() for h in claimed.split(",") if h.strip()] if claimed else []
    if not hops:
        return request.client.host if request.client else ""
    for hop in reversed(hops):
        if not _is_trusted(hop, trusted):
            return hop
    return hops[0]


@lru_cache(maxsize=4)  # one configuration per server
def _trusted(configured: tuple[str, ...]) -> list:
    return [ipaddress.ip_network(p, strict=False) for p in configured]


def _is_trusted(hop: str, trusted: list) -> bool:
    try:
        address = ipaddress.ip_address(hop)
    except ValueError:
        return False
    return any(address in network for network in trusted)
