"""The CLI sends an Idempotency-Key with the POSTs the server deduplicates, and retries
those (and reads) once on a network error with the same key; other POSTs are not retried."""

import httpx
import pytest

from dockyard.cli.client import CliError, Client
from dockyard.core import idempotency


def client_with(handler) -> Client:
    client = Client(url="http://dockyard.test", token="t")
    client.http = httpx.Client(base_url="http://dockyard.test/api/v1", transport=httpx.MockTransport(handler))
    return client


def flaky(seen: list):
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) == 1:
            raise httpx.ConnectError("connection reset", request=request)
        return httpx.Response(201, json={"id": "abc"})
    return handler


def test_a_create_is_retried_once_with_the_same_key():
    seen = []
    assert client_with(flaky(seen)).post("/instances", {"image": "x"}) == {"id": "abc"}
    keys = [r.headers.get(idempotency.HEADER) for r in seen]
    assert len(keys) == 2 and keys[0] and keys[0] == keys[1]


def test_each_request_gets_its_own_key():
    seen = []
    client = client_with(lambda r: seen.append(r) or httpx.Response(200, json={}))
    client.post("/instances/a/start", {})
    client.post("/instances/a/start", {})
    assert seen[0].headers[idempotency.HEADER] != seen[1].headers[idempotency.HEADER]


def test_a_post_the_server_does_not_deduplicate_is_not_retried():
    seen = []
    with pytest.raises(CliError, match="cannot reach Dockyard"):
        client_with(flaky(seen)).post("/keys", {"name": "k"})
    assert len(seen) == 1 and idempotency.HEADER not in seen[0].headers


@pytest.mark.parametrize("method, path, covered", [
    ("POST", "/instances", True), ("POST", "/instances/abc/start", True), ("POST", "/instances/abc/clone", True),
    ("POST", "/instances/abc/save", True), ("POST", "/instances/abc/migrate", True), ("POST", "/clusters", True),
    ("POST", "/billing/credit", True), ("GET", "/instances", False), ("POST", "/instances/abc/exec", False),
    ("POST", "/instances/abc/stop", False), ("POST", "/auth/login", False), ("POST", "/instances/a/b/start", False),
])
def test_which_requests_are_covered(method, path, covered):
    assert idempotency.covers(method, path) is covered
