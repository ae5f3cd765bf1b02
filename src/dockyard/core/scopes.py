"""What a scoped API token may do: pure rules over the route's method, tags and path."""

from __future__ import annotations

ALL, READ, INSTANCES, BILLING = "all", "read", "instances", "billing"
SCOPES = (ALL, READ, INSTANCES, BILLING)
READ_METHODS = frozenset({"GET", "HEAD"})
# The routers (by their OpenAPI tag) each scope opens.
_TAGS = {
    INSTANCES: frozenset({"instances", "access", "monitoring", "clusters", "market", "images", "operations",
                          "ssh keys", "notifications", "package mirrors"}),
    BILLING: frozenset({"billing", "notifications"}),
}
# Any token may say whose it is and end itself.
_ALWAYS = frozenset({("GET", "/me"), ("POST", "/auth/logout")})


def allows(scope: str, method: str, tags: list[str] | tuple[str, ...], route_path: str) -> bool:
    """`route_path` is the route's template without the API prefix ("/instances/{key}")."""
    if scope == ALL or (method, route_path) in _ALWAYS:
        return True
    if scope == READ:
        return method in READ_METHODS and not route_path.startswith("/auth/")
    return bool(_TAGS.get(scope, frozenset()) & set(tags))


def opens_instances(scope: str) -> bool:
    """May this token reach an instance's JupyterLab and ports (the access paths)?"""
    return scope in (ALL, INSTANCES)
