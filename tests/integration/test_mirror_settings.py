"""Package-mirror settings: who may set what, and bad input refused at save (API and CLI)
with a message naming the problem, changing nothing."""

import pytest

PEM = ("-----BEGIN CERTIFICATE-----\n"
       "MIIBdzCCAR2gAwIBAgIUYXqS0p9u1u4fV2Q9w6o7KZ3x2VwwCgYIKoZIzj0EAwIw\n"
       "-----END CERTIFICATE-----\n")  # a DER SEQUENCE's first bytes: the shape is all that is checked


def settings(client):
    return client.get("/mirrors").json()


def test_the_site_is_the_admins_and_additions_are_each_users(server):
    site = server.admin.put("/mirrors/site", json={"pip_index_url": "https://pypi.site.example/simple/",
                                                   "conda_channel_url": "https://conda.site.example/main"})
    assert site.status_code == 200, site.text
    assert server.alice.put("/mirrors/site", json={"pip_index_url": "https://evil.example/"}).status_code == 403
    mine = server.alice.put("/mirrors", json={"pip_index_url": "https://alice.example/simple/", "ca_bundle": PEM})
    assert mine.status_code == 200 and mine.json()["ca_bundle"] == PEM
    alice, bob = settings(server.alice), settings(server.bob)
    assert alice["site"]["pip_index_url"] == bob["site"]["pip_index_url"] == "https://pypi.site.example/simple/"
    assert alice["mine"]["pip_index_url"] == "https://alice.example/simple/" and bob["mine"]["pip_index_url"] is None
    audit = server.admin.get("/admin/audit", params={"action": "mirrors.site"}).json()
    assert "pip_index_url=https://pypi.site.example/simple/" in str(audit)


@pytest.mark.parametrize("body, words", [
    ({"pip_index_url": "ftp://mirror.example/simple"}, "pip_index_url: 'ftp://mirror.example/simple' is not an http"),
    ({"apt_mirror_url": "file:///etc/passwd"}, "apt_mirror_url: 'file:///etc/passwd' is not an http"),
    ({"conda_channel_url": "mirror.example/conda"}, "conda_channel_url: 'mirror.example/conda' is not an http"),
    ({"pip_index_url": "https:///no-host"}, "is not an http:// or https:// URL"),
    ({"pip_index_url": "http://a.example/simple\nindex-url = http://evil"}, "spaces or control characters"),
    ({"ca_bundle": "not a certificate"}, "ca_bundle: not a PEM bundle"),
    ({"ca_bundle": PEM + "trailing junk"}, "ca_bundle: not a PEM bundle"),
    ({"ca_bundle": "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n"}, "ca_bundle: not a PEM bundle"),
    ({"ca_bundle": "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n"},
     "does not hold a certificate"),
    ({"pip_index": "https://a.example/"}, "pip_index"),
])
def test_bad_input_is_refused_and_changes_nothing(server, body, words):
    before_site, before_mine = settings(server.admin)["site"], settings(server.bob)["mine"]
    for client, path in ((server.admin, "/mirrors/site"), (server.bob, "/mirrors")):
        refused = client.put(path, json=body)
        assert refused.status_code in (400, 422), refused.text
        assert words in refused.json()["detail"]
    assert settings(server.admin)["site"] == before_site and settings(server.bob)["mine"] == before_mine


def test_cli_refuses_bad_input_in_one_line(server, tmp_path):
    before = settings(server.admin)
    bad_url = server.cli("admin", "mirrors", "set", "--pip-index", "ftp://mirror.example/simple", token_of="root-admin")
    assert bad_url.returncode == 1 and len(bad_url.stderr.strip().splitlines()) == 1
    assert "pip_index_url: 'ftp://mirror.example/simple' is not an http:// or https:// URL" in bad_url.stderr
    junk = tmp_path / "junk.pem"
    junk.write_text("hello\n")
    bad_ca = server.cli("mirrors", "set", "--ca-bundle", str(junk), token_of="bob")
    assert bad_ca.returncode == 1 and "ca_bundle: not a PEM bundle" in bad_ca.stderr
    missing = server.cli("mirrors", "set", "--ca-bundle", str(tmp_path / "nope.pem"), token_of="bob")
    assert missing.returncode == 1 and "cannot read it" in missing.stderr
    assert settings(server.admin) == before
    ok = server.cli("mirrors", "set", "--apt-mirror", "http://deb.site.example/debian", token_of="bob")
    assert ok.returncode == 0, ok.stderr
    shown = server.cli("mirrors", "show", token_of="bob", check=True).stdout
    assert "http://deb.site.example/debian" in shown
