"""Which host a request is for, and what the front door lets through between an instance
and a browser (access/origins.py, access/front.py): pure functions, no server."""

import pytest
from pydantic import ValidationError

from dockyard.access import front
from dockyard.access.origins import InstanceOrigins
from dockyard.access.relay import Request
from dockyard.config import Settings


def test_an_instance_host_is_recognised_and_nothing_else():
    origins = InstanceOrigins("{id}.localhost")
    assert origins.instance_of(b"3f2a9c1b7d0e.localhost:8000") == "3f2a9c1b7d0e"
    assert origins.instance_of("3F2A9C1B7D0E.LocalHost") == "3f2a9c1b7d0e"  # host names ignore case
    for other in (b"127.0.0.1:8000", b"localhost:8000", b"x.3f2a9c1b7d0e.localhost", b"3f2a9c1b7d0e.localhost.evil.org",
                  b"not-hex.localhost", b"[::1]:8000", b"", None):
        assert origins.instance_of(other) is None, other
    inst = InstanceOrigins("i-{id}.inst.example.org")
    assert inst.instance_of(b"i-abc123.inst.example.org") == "abc123"
    assert inst.instance_of(b"abc123.inst.example.org") is None


def test_links_keep_the_consoles_port_unless_the_template_has_one():
    assert InstanceOrigins("{id}.localhost").base("ab12", "http", "127.0.0.1:8000") == "http://ab12.localhost:8000"
    assert InstanceOrigins("{id}.inst.example.org").base("ab12", "https", "dockyard.example.org") == \
        "https://ab12.inst.example.org"
    assert InstanceOrigins("{id}.inst.example.org:8443").base("ab12", "https", "dockyard.example.org:443") == \
        "https://ab12.inst.example.org:8443"
    assert InstanceOrigins("{id}.localhost").base("ab12", "http", "[::1]") == "http://ab12.localhost"
    assert InstanceOrigins("{id}.localhost").base("ab12", "http", "a:8000/x") == "http://ab12.localhost"


@pytest.mark.parametrize("bad", ["localhost", "{id}", "x.{id}.example.org", "{id}.{id}.org", "{id}.ex ample.org",
                                 "{id}.example.org:http", "{id}_x.example.org"])
def test_a_bad_instance_domain_is_refused(bad):
    with pytest.raises(ValidationError, match="instance_domain"):
        Settings(instance_domain=bad)


def test_cookies_between_a_browser_and_an_instance():
    assert front.without_our_cookies(b"dockyard_session=a; theirs=1; dockyard_instance=b;dockyard_login_csrf=c") == \
        b"theirs=1"
    head = (b"HTTP/1.1 200 OK\r\nSet-Cookie: theirs=1; Path=/\r\nset-cookie: dockyard_session=x\r\n"
            b"Set-Cookie: dockyard_instance=y; Path=/\r\nSet-Cookie: wide=1; path=/; DOMAIN=localhost\r\n"
            b"Content-Type: text/html")
    assert front.instance_response(head) == b"HTTP/1.1 200 OK\r\nSet-Cookie: theirs=1; Path=/\r\nContent-Type: text/html"
    shared = front.shared_response(b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nAccess-Control-Allow-Origin: https://x\r\n"
                                   b"Content-Type: text/html")
    assert shared == (b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Security-Policy: " + front.SHARED_CSP
                      + b"\r\nAccess-Control-Allow-Origin: *")
    assert b"allow-same-origin" not in front.SHARED_CSP


def _request(method: bytes, **headers: bytes) -> Request:
    return Request(method=method, headers=[(k.replace("_", "-").encode(), v) for k, v in headers.items()])


def test_requests_from_pages_of_other_origins_are_told_apart():
    host = b"ab12.localhost:8000"
    assert not front._foreign(_request(b"GET", host=host, origin=b"http://evil.localhost"))  # reads: CORS keeps them
    assert not front._foreign(_request(b"POST", host=host, origin=b"http://ab12.localhost:8000"))
    assert front._foreign(_request(b"POST", host=host, origin=b"http://evil.localhost"))
    assert front._foreign(_request(b"DELETE", host=host, origin=b"null"))
    assert front._foreign(_request(b"POST", host=host, sec_fetch_site=b"same-site"))
    assert not front._foreign(_request(b"POST", host=host))  # not a browser
    upgrade = _request(b"GET", host=host, origin=b"http://cd34.localhost:8000")
    upgrade.upgrade = True
    assert front._foreign(upgrade)
