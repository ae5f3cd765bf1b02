"""Which origin a request came to: the console's, or one instance's.

Everything that comes out of an instance is served on a host of its own, made from the
`instance_domain` template (`{id}.localhost` by default), so that its pages never share an
origin, or a cookie, with the console or with another instance (docs/access.md).
"""

from __future__ import annotations

import re
from functools import lru_cache

# Instance ids are lowercase hex (secrets.token_hex); host names are case-insensitive.
_ID = r"([0-9a-f]{1,64})"


class InstanceOrigins:
    def __init__(self, template: str):
        host, _, self.port = template.partition(":")  # validated by Settings
        prefix, suffix = host.split("{id}")
        self.prefix, self.suffix = prefix, suffix
        self._host = re.compile(re.escape(prefix) + _ID + re.escape(suffix))

    def instance_of(self, host_header: bytes | str | None) -> str | None:
        """The id of the instance whose host this is, or None for any other host (the console)."""
        if not host_header:
            return None
        if isinstance(host_header, bytes):
            host_header = host_header.decode("latin-1")
        host = host_header.strip().lower()
        if host.startswith("["):
            return None  # an IPv6 literal: the console
        match = self._host.fullmatch(host.rsplit(":", 1)[0])
        return match.group(1) if match else None

    def host(self, instance_id: str) -> str:
        return self.prefix + instance_id + self.suffix

    def base(self, instance_id: str, scheme: str, console_host: str) -> str:
        """`scheme://host[:port]` of an instance, for links given out on the console's host."""
        port = self.port
        if not port:
            console = console_host.strip()
            if not console.endswith("]") and ":" in console:
                port = console.rsplit(":", 1)[1]
                port = port if port.isdigit() else ""
        return f"{scheme}://{self.host(instance_id)}" + (f":{port}" if port else "")


@lru_cache(maxsize=8)
def for_template(template: str) -> InstanceOrigins:
    return InstanceOrigins(template)


def instance_base(request, instance_id: str) -> str:
    """An instance's `scheme://host[:port]`, for a link answered to a request on the console's host."""
    origins = for_template(request.app.state.platform.settings.instance_domain)
    return origins.base(instance_id, request.url.scheme, request.headers.get("host", ""))
