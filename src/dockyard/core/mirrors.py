"""Package mirrors for instances: checking the settings and rendering the files a new
instance gets (pure logic; services/mirrors.py stores them, the driver writes the files).

The operator's site settings come first and replace the public indexes (pip's index-url,
the distribution's apt archive, conda's first channel); a user's own settings are
additions after them (pip's extra-index-url, another apt source, a further channel, more
CAs). Nothing is tested at boot: an unreachable mirror is written all the same, and the
image's `dockyard-check` says it does not answer.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, fields
from urllib.parse import urlparse

from dockyard.core.errors import InvalidInput

URL_FIELDS = ("pip_index_url", "apt_mirror_url", "conda_channel_url")
MAX_URL = 2048
MAX_CA_BYTES = 256 * 1024

PIP_CONF = "/etc/pip.conf"
CONDARC = "/etc/conda/.condarc"
APT_SOURCES = "/etc/apt/sources.list"
APT_USER_SOURCES = "/etc/apt/sources.list.d/dockyard-user.list"
CA_FILE = "/usr/local/share/ca-certificates/dockyard-mirrors.crt"
SYSTEM_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"  # includes CA_FILE once the entrypoint ran
MIRRORS_JSON = "/etc/dockyard/mirrors.json"  # what dockyard-check tries

_PEM_BLOCK = re.compile(r"-----BEGIN CERTIFICATE-----\s+([A-Za-z0-9+/=\s]+?)\s*-----END CERTIFICATE-----")
# What each distribution's archive holds, for the sources that point at a mirror of it.
_APT_LAYOUT = {
    "debian": (("", "-updates"), "main"),
    "ubuntu": (("", "-updates", "-security"), "main restricted universe multiverse"),
}
# Files of the distribution that would still send apt to the public archive.
_DISTRO_SOURCES = {"debian": "/etc/apt/sources.list.d/debian.sources",
                   "ubuntu": "/etc/apt/sources.list.d/ubuntu.sources"}


@dataclass(frozen=True)
class Mirrors:
    pip_index_url: str | None = None
    apt_mirror_url: str | None = None
    conda_channel_url: str | None = None
    ca_bundle: str | None = None  # PEM certificates

    def is_empty(self) -> bool:
        return not any(getattr(self, f.name) for f in fields(self))


def check_url(name: str, value: str | None) -> str | None:
    """An http(s) URL with a host, or None for "not set"; anything else is refused."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if len(value) > MAX_URL:
        raise InvalidInput(f"{name}: longer than {MAX_URL} characters", field=name)
    if any(ch.isspace() or ord(ch) < 32 for ch in value):
        raise InvalidInput(f"{name}: {value!r} contains spaces or control characters", field=name)
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise InvalidInput(f"{name}: {value!r} is not an http:// or https:// URL", field=name)
    return value


def check_ca_bundle(value: str | None) -> str | None:
    """One or more PEM certificates (only the certificate blocks are kept), or None."""
    if value is None or not value.strip():
        return None
    if len(value.encode()) > MAX_CA_BYTES:
        raise InvalidInput(f"ca_bundle: larger than {MAX_CA_BYTES // 1024} KiB", field="ca_bundle")
    blocks = list(_PEM_BLOCK.finditer(value))
    leftover = _PEM_BLOCK.sub("", value).strip()
    if not blocks or leftover:
        raise InvalidInput("ca_bundle: not a PEM bundle (expected only '-----BEGIN CERTIFICATE-----' "
                           "... '-----END CERTIFICATE-----' blocks)", field="ca_bundle")
    for block in blocks:
        try:
            der = base64.b64decode("".join(block.group(1).split()), validate=True)
        except binascii.Error:
            raise InvalidInput("ca_bundle: a certificate block is not valid base64", field="ca_bundle") from None
        if not der.startswith(b"\x30"):  # a DER SEQUENCE
            raise InvalidInput("ca_bundle: a certificate block does not hold a certificate", field="ca_bundle")
    return "\n".join(block.group(0) for block in blocks) + "\n"


def checked(pip_index_url: str | None = None, apt_mirror_url: str | None = None,
            conda_channel_url: str | None = None, ca_bundle: str | None = None) -> Mirrors:
    return Mirrors(pip_index_url=check_url("pip_index_url", pip_index_url),
                   apt_mirror_url=check_url("apt_mirror_url", apt_mirror_url),
                   conda_channel_url=check_url("conda_channel_url", conda_channel_url),
                   ca_bundle=check_ca_bundle(ca_bundle))


def parse_os_release(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip().isidentifier():
            values[key.strip()] = value.strip().strip('"').strip("'")
    return values


def _apt_lines(url: str, distro: str, codename: str) -> list[str]:
    suffixes, components = _APT_LAYOUT[distro]
    return [f"deb {url} {codename}{suffix} {components}" for suffix in suffixes]


def render(site: Mirrors, user: Mirrors, os_release: dict[str, str] | None) -> dict[str, bytes]:
    """The files (path -> content) a new instance gets; {} when nothing is set.

    `os_release` (the image's /etc/os-release) decides the apt layout; apt is left alone
    for a distribution other than Debian or Ubuntu, or an image without that file.
    """
    if site.is_empty() and user.is_empty():
        return {}
    files: dict[str, str] = {}
    tried: list[dict[str, str]] = []
    cas = "".join(ca for ca in (site.ca_bundle, user.ca_bundle) if ca)

    pip = []
    if site.pip_index_url:
        pip.append(f"index-url = {site.pip_index_url}")
    if user.pip_index_url:
        pip.append(f"extra-index-url = {user.pip_index_url}")
    # pip ignores a plain-HTTP index unless its host is trusted: the operator chose it.
    insecure = sorted({urlparse(url).netloc for url in (site.pip_index_url, user.pip_index_url)
                       if url and url.startswith("http://")})
    if insecure:
        pip.append("trusted-host = " + " ".join(insecure))
    if cas:
        pip.append(f"cert = {SYSTEM_BUNDLE}")
    if pip:
        files[PIP_CONF] = "# Written by Dockyard at the instance's creation: the site's package mirrors.\n" \
                          "[global]\n" + "\n".join(pip) + "\n"
    tried += [{"kind": "pip", "url": url} for url in (site.pip_index_url, user.pip_index_url) if url]

    channels = [url for url in (site.conda_channel_url, user.conda_channel_url) if url]
    if channels or cas:
        lines = ["# Written by Dockyard at the instance's creation: the site's package mirrors."]
        if channels:
            lines += ["channels:"] + [f"  - {json.dumps(url)}" for url in channels]
        if site.conda_channel_url:
            lines += ["default_channels:", f"  - {json.dumps(site.conda_channel_url)}"]
        if cas:
            lines.append(f"ssl_verify: {SYSTEM_BUNDLE}")
        files[CONDARC] = "\n".join(lines) + "\n"
    tried += [{"kind": "conda", "url": url} for url in channels]

    distro = (os_release or {}).get("ID", "")
    codename = (os_release or {}).get("VERSION_CODENAME", "")
    if distro in _APT_LAYOUT and codename:
        if site.apt_mirror_url:
            files[APT_SOURCES] = ("# Written by Dockyard at the instance's creation: the site's apt mirror.\n"
                                  + "\n".join(_apt_lines(site.apt_mirror_url, distro, codename)) + "\n")
            files[_DISTRO_SOURCES[distro]] = f"# Replaced by Dockyard's apt mirror: see {APT_SOURCES}.\n"
        if user.apt_mirror_url:
            files[APT_USER_SOURCES] = ("# Written by Dockyard at the instance's creation: your apt source.\n"
                                       + "\n".join(_apt_lines(user.apt_mirror_url, distro, codename)) + "\n")
    tried += [{"kind": "apt", "url": url} for url in (site.apt_mirror_url, user.apt_mirror_url) if url]

    if cas:
        files[CA_FILE] = cas
    files[MIRRORS_JSON] = json.dumps(tried, indent=1) + "\n"
    return {path: text.encode() for path, text in files.items()}
