"""Package mirrors: which settings are accepted, and the files a new instance gets."""

import json

import pytest
from hypothesis import given, strategies as st

from dockyard.core import mirrors
from dockyard.core.errors import InvalidInput

CERT = ("-----BEGIN CERTIFICATE-----\nMIIBdzCCAR2gAwIBAgIUYXqS0p9u1u4fV2Q9w6o7KZ3x2VwwCgYIKoZIzj0EAwIw\n"
        "-----END CERTIFICATE-----\n")
DEBIAN = {"ID": "debian", "VERSION_CODENAME": "bookworm"}
UBUNTU = {"ID": "ubuntu", "VERSION_CODENAME": "noble"}


def text(files, path):
    return files[path].decode()


def test_nothing_set_writes_nothing():
    assert mirrors.render(mirrors.Mirrors(), mirrors.Mirrors(), DEBIAN) == {}


def test_the_site_replaces_and_the_user_adds():
    site = mirrors.checked(pip_index_url="https://pypi.site/simple/", apt_mirror_url="http://deb.site/debian",
                           conda_channel_url="https://conda.site/main", ca_bundle=CERT)
    user = mirrors.checked(pip_index_url="http://10.0.0.9:8080/simple/", conda_channel_url="https://conda.me/c",
                           ca_bundle=CERT)
    files = mirrors.render(site, user, DEBIAN)
    pip = text(files, mirrors.PIP_CONF)
    assert "index-url = https://pypi.site/simple/" in pip and "extra-index-url = http://10.0.0.9:8080/simple/" in pip
    assert "trusted-host = 10.0.0.9:8080" in pip and f"cert = {mirrors.SYSTEM_BUNDLE}" in pip
    assert text(files, mirrors.APT_SOURCES).splitlines()[1:] == [
        "deb http://deb.site/debian bookworm main", "deb http://deb.site/debian bookworm-updates main"]
    assert "/etc/apt/sources.list.d/debian.sources" in files and mirrors.APT_USER_SOURCES not in files
    condarc = text(files, mirrors.CONDARC)
    assert condarc.index("conda.site/main") < condarc.index("conda.me/c") and "ssl_verify" in condarc
    assert text(files, mirrors.CA_FILE).count("BEGIN CERTIFICATE") == 2
    assert [m["kind"] for m in json.loads(text(files, mirrors.MIRRORS_JSON))] == ["pip", "pip", "conda", "conda", "apt"]


def test_ubuntu_layout_and_a_user_apt_source():
    files = mirrors.render(mirrors.Mirrors(), mirrors.checked(apt_mirror_url="https://me.example/ubuntu"), UBUNTU)
    lines = text(files, mirrors.APT_USER_SOURCES).splitlines()[1:]
    assert lines == [f"deb https://me.example/ubuntu noble{s} main restricted universe multiverse"
                     for s in ("", "-updates", "-security")]
    assert mirrors.APT_SOURCES not in files and mirrors.PIP_CONF not in files


def test_apt_is_left_alone_for_another_distribution_or_none():
    site = mirrors.checked(apt_mirror_url="http://deb.site/debian")
    for release in ({"ID": "alpine", "VERSION_CODENAME": "x"}, None, {"ID": "debian"}):
        files = mirrors.render(site, mirrors.Mirrors(), release)
        assert not [path for path in files if path.startswith("/etc/apt")]
        assert json.loads(text(files, mirrors.MIRRORS_JSON)) == [{"kind": "apt", "url": "http://deb.site/debian"}]


def test_os_release_is_parsed():
    assert mirrors.parse_os_release('PRETTY_NAME="Debian GNU/Linux 12"\nID=debian\nVERSION_CODENAME=bookworm\n#x\n') \
        == {"PRETTY_NAME": "Debian GNU/Linux 12", "ID": "debian", "VERSION_CODENAME": "bookworm"}


@pytest.mark.parametrize("url", ["ftp://a.example/", "file:///etc", "a.example/simple", "https://", "http:///x",
                                 "javascript:alert(1)", "https://a.example/ x", "https://a.example/\n[global]",
                                 "https://a.example/" + "x" * 2048])
def test_bad_urls_are_refused(url):
    with pytest.raises(InvalidInput) as refused:
        mirrors.checked(pip_index_url=url)
    assert refused.value.field == "pip_index_url" and refused.value.message.startswith("pip_index_url: ")


@given(st.text(max_size=300))
def test_no_text_but_pem_certificates_is_taken_as_a_bundle(value):
    try:
        kept = mirrors.check_ca_bundle(value)
    except InvalidInput as exc:
        assert exc.field == "ca_bundle"
        return
    assert kept is None or kept.startswith("-----BEGIN CERTIFICATE-----")


def test_empty_values_mean_not_set():
    assert mirrors.checked(pip_index_url="  ", ca_bundle="\n").is_empty()
