"""The byte relay behind the access paths (access/relay.py), between real clients (raw
sockets, httpx, the websockets library) and a real HTTP server (uvicorn), over real
sockets: framing, keep-alive, uploads, streaming, upgrades and failures."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import threading
import time

import httpx
import pytest

from tests.harness import own_address
import uvicorn
import uvloop
from websockets.sync.client import connect

from dockyard.access.front import _INSTANCE_HEADERS, without_our_cookies
from dockyard.access.relay import ClientConnection, Limits, Route


async def backend(scope, receive, send):
    """A small ASGI app: /echo describes the request, /big streams, /sse trickles, /ws echoes."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": message.get("text"), "bytes": message.get("bytes")})
    path, query = scope["path"], scope["query_string"].decode()
    if path == "/echo":
        digest, size = hashlib.sha256(), 0
        while True:
            message = await receive()
            digest.update(message.get("body", b""))
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = json.dumps({"method": scope["method"], "path": path, "query": query, "size": size,
                           "sha256": digest.hexdigest(),
                           "headers": [[k.decode(), v.decode()] for k, v in scope["headers"]]}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
    elif path == "/big":
        n = int(query.split("=")[1])
        await send({"type": "http.response.start", "status": 200, "headers": []})  # chunked
        block = bytes(range(256)) * 256
        for start in range(0, n, len(block)):
            await send({"type": "http.response.body", "body": block[: min(len(block), n - start)], "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/early":  # answers before reading the body, as a body limit does
        body = b'{"detail": "request body too large"}'
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
    elif path == "/sse":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        await asyncio.sleep(1.0)
        await send({"type": "http.response.body", "body": b"data: 2\n\n"})
    else:
        await send({"type": "http.response.start", "status": 404, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})


async def raw_backend(reader, writer):
    """/old: no Content-Length, the end of the body is the end of the connection;
    /evil: a response with a second one glued behind it, for the client's next request."""
    head = await reader.readuntil(b"\r\n\r\n")
    if head.startswith(b"GET /evil"):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                     b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\npoison!")
    else:
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n" + b"z" * 100_000)
    await writer.drain()
    writer.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Relay:
    """A backend (uvicorn), an old-style backend, and the relay in front of both, on one
    event loop in a background thread."""

    def __init__(self, limits: Limits | None = None):
        self.limits = limits or Limits()
        self.loop = uvloop.new_event_loop()  # as `dockyard serve` runs it
        self.backend_port, self.old_port, self.port = _free_port(), _free_port(), _free_port()
        self.dead_port = _free_port()  # nobody listens here
        self.server = uvicorn.Server(uvicorn.Config(backend, host="127.0.0.1", port=self.backend_port,
                                                    log_level="warning", timeout_keep_alive=1))
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def route(self, request):
        path = request.url
        if path.startswith(b"/old") or path.startswith(b"/evil"):
            return Route(("127.0.0.1", self.old_port), path)
        if path.startswith(b"/dead"):
            return Route(("127.0.0.1", self.dead_port), path)
        if path.startswith(b"/refuse"):
            from dockyard.access.relay import response
            return response(404, "no such instance")
        if path.startswith(b"/slow-refuse"):
            return self._slow_refusal()
        # Like an instance route: no Authorization, no platform cookie, an added secret.
        return Route(("127.0.0.1", self.backend_port), path, _INSTANCE_HEADERS, [(b"X-Secret", b"s3")],
                     cookie_filter=without_our_cookies)

    async def _slow_refusal(self):
        from dockyard.access.relay import response
        await asyncio.sleep(0.2)
        return response(401, "sign in first")

    def start(self) -> Relay:
        self.thread.start()

        async def up():
            asyncio.ensure_future(self.server.serve())
            await asyncio.start_server(raw_backend, "127.0.0.1", self.old_port)
            await self.loop.create_server(lambda: ClientConnection(self.route, self.limits), "0.0.0.0", self.port)
            while not self.server.started:
                await asyncio.sleep(0.01)

        asyncio.run_coroutine_threadsafe(up(), self.loop).result(10)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        time.sleep(0.3)
        self.loop.call_soon_threadsafe(self.loop.stop)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def relay():
    r = Relay().start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def tight():
    """A relay with small limits: 4 KB heads, 1 s to send one, 3 connections per address."""
    r = Relay(Limits(head_bytes=4096, head_timeout_s=1.0, connections_per_ip=3)).start()
    yield r
    r.stop()




def _read_all(sock: socket.socket) -> bytes:
    got = b""
    while chunk := sock.recv(65536):
        got += chunk
    return got


def raw(relay: Relay, data: bytes, until_closed: bool = False, expect: int = 1, timeout: float = 5) -> bytes:
    """Send bytes on a fresh connection; read until `expect` responses are in (or the close)."""
    with socket.create_connection(("127.0.0.1", relay.port), timeout=timeout) as s:
        s.sendall(data)
        got = b""
        while True:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            got += chunk
            if not until_closed and got.count(b"HTTP/1.1 ") >= expect and _complete(got, expect):
                break
        return got


def _complete(data: bytes, expect: int) -> bool:
    """True when `expect` Content-Length-framed responses are whole."""
    rest = data
    for _ in range(expect):
        head, sep, rest = rest.partition(b"\r\n\r\n")
        if not sep:
            return False
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        if len(rest) < length:
            return False
        rest = rest[length:]
    return True


def test_headers_are_rewritten_for_an_instance(relay):
    r = httpx.get(f"{relay.url}/echo?x=1", headers={
        "Authorization": "Bearer secret-token", "Cookie": "dockyard_session=abc; theirs=1",
        "X-Secret": "forged"})
    assert r.status_code == 200
    echo = r.json()
    headers = {}
    for name, value in echo["headers"]:
        headers.setdefault(name, []).append(value)
    assert echo["query"] == "x=1"
    assert "authorization" not in headers
    assert headers["cookie"] == ["theirs=1"]
    assert headers["x-forwarded-for"] == ["127.0.0.1"]
    assert headers["x-secret"] == ["s3"]


def test_keep_alive_head_then_get_and_pipelining(relay):
    one = b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n"
    head = b"HEAD /echo HTTP/1.1\r\nHost: a\r\n\r\n"
    answer = raw(relay, head + one + one, expect=3)
    assert answer.count(b"HTTP/1.1 200 OK") == 3
    # The HEAD response has no body, the two GETs have theirs, in order.
    first_head, _, rest = answer.partition(b"\r\n\r\n")
    assert rest.startswith(b"HTTP/1.1 200 OK")
    assert rest.count(b'"method": "GET"') == 2


def test_uploads_chunked_and_sized(relay):
    body = bytes(range(256)) * 20_000  # 5 MB

    def chunks():
        for i in range(0, len(body), 100_000):
            yield body[i:i + 100_000]

    chunked = httpx.post(f"{relay.url}/echo", content=chunks(), timeout=30).json()
    sized = httpx.post(f"{relay.url}/echo", content=body, timeout=30).json()
    for echo in (chunked, sized):
        assert echo["size"] == len(body)
        assert echo["sha256"] == hashlib.sha256(body).hexdigest()


def test_expect_100_continue(relay):
    """The interim 100 Continue is passed on and is not taken for the answer."""
    answer = raw(relay, b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello"
                        b"GET /echo HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", until_closed=True)
    assert answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK")
    assert b'"size": 5' in answer and answer.count(b"HTTP/1.1 200 OK") == 2


def test_large_streamed_response(relay):
    n = 20 * 1024 * 1024 + 7
    with httpx.stream("GET", f"{relay.url}/big?n={n}", timeout=30) as r:
        got = sum(len(chunk) for chunk in r.iter_raw())
    assert got == n


def test_events_arrive_as_they_are_sent(relay):
    started = time.monotonic()
    with httpx.stream("GET", f"{relay.url}/sse", timeout=10) as r:
        lines = r.iter_lines()
        assert next(lines) == "data: 1"
        first = time.monotonic() - started
        rest = [line for line in lines if line]
    assert first < 0.9  # not held back until the stream ends (the second comes after 1 s)
    assert rest == ["data: 2"]


def test_websocket_tunnel(relay):
    with connect(f"ws://127.0.0.1:{relay.port}/ws", max_size=None) as ws:
        for i in range(100):
            ws.send(f"message {i}")
            assert ws.recv(timeout=5) == f"message {i}"
        blob = bytes(range(256)) * 4096  # 1 MB, binary
        ws.send(blob)
        assert ws.recv(timeout=10) == blob


def test_close_delimited_response_and_connection_close(relay):
    answer = raw(relay, b"GET /old HTTP/1.1\r\nHost: a\r\n\r\n", until_closed=True)
    assert answer.endswith(b"z" * 100_000)
    answer = raw(relay, b"GET /echo HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", until_closed=True)
    assert answer.startswith(b"HTTP/1.1 200 OK") and answer.rstrip().endswith(b"}")


def test_failures_get_clear_answers(relay):
    assert httpx.get(f"{relay.url}/dead").status_code == 502
    assert "did not answer" in httpx.get(f"{relay.url}/dead").json()["detail"]
    refused = httpx.get(f"{relay.url}/refuse")
    assert refused.status_code == 404 and refused.json()["detail"] == "no such instance"
    assert httpx.get(f"{relay.url}/slow-refuse").status_code == 401
    assert raw(relay, b"NOT HTTP AT ALL\r\n\r\n", until_closed=True).startswith(b"HTTP/1.1 400")


def test_an_idle_upstream_connection_closed_by_the_backend_is_reopened(relay):
    with httpx.Client(base_url=relay.url) as client:  # one kept-alive client connection
        assert client.get("/echo").status_code == 200
        time.sleep(1.6)  # the backend (keep-alive 1 s) closes its side meanwhile
        assert client.get("/echo").status_code == 200
        assert client.post("/echo", content=b"x").json()["size"] == 1


def test_forwarded_headers_only_from_this_host(relay):
    """A TLS terminator on this host may say who the client is; nobody else may."""
    echo = httpx.get(f"{relay.url}/echo", headers={"X-Forwarded-For": "203.0.113.9",
                                                  "X-Forwarded-Proto": "https"}).json()
    headers = dict(echo["headers"])
    assert headers["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
    assert headers["x-forwarded-proto"] == "https"
    # From another address (this host's own, not loopback) the claim is replaced.
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the source address
            own = udp.getsockname()[0]
    except OSError:
        pytest.skip("this host has no address other than loopback")
    probe = socket.create_connection((own, relay.port))
    probe.sendall(b"GET /echo HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 6.6.6.6\r\nConnection: close\r\n\r\n")
    answer = b""
    while chunk := probe.recv(65536):
        answer += chunk
    probe.close()
    assert b"6.6.6.6" not in answer and own.encode() in answer


def test_smuggling_shapes_and_huge_heads_are_refused(relay):
    two = raw(relay, b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", until_closed=True)
    assert two.startswith(b"HTTP/1.1 400") and b"Transfer-Encoding" in two
    odd = raw(relay, b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
              until_closed=True)
    assert odd.startswith(b"HTTP/1.1 400")
    huge = raw(relay, b"GET /echo HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", until_closed=True)
    assert huge.startswith(b"HTTP/1.1 431")
    # The proxy's own answer to a HEAD has no body, and the connection stays usable.
    answer = raw(relay, b"HEAD /refuse HTTP/1.1\r\nHost: a\r\n\r\nGET /echo HTTP/1.1\r\nHost: a\r\n"
                        b"Connection: close\r\n\r\n", until_closed=True)
    first, _, rest = answer.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 404") and rest.startswith(b"HTTP/1.1 200 OK")


def test_bytes_beyond_a_response_never_reach_the_client(relay):
    answer = raw(relay, b"GET /evil HTTP/1.1\r\nHost: a\r\n\r\nGET /echo HTTP/1.1\r\nHost: a\r\n\r\n",
                 until_closed=True)
    assert b"poison" not in answer


def test_a_slow_reader_then_its_next_request(relay):
    """The upstream held back while the client reads slowly is let go again afterwards."""
    with httpx.Client(base_url=relay.url, timeout=20) as client:
        with client.stream("GET", "/big?n=8000000") as r:
            got = 0
            for chunk in r.iter_raw(65536):
                got += len(chunk)
                time.sleep(0.001)
        assert got == 8_000_000
        assert client.get("/big?n=10").status_code == 200
        assert client.get("/echo").json()["method"] == "GET"


def test_an_early_answer_reaches_a_client_that_is_still_sending(relay):
    """The backend answers 413 before the body is read: the client, still sending a large
    body in one go, must read the answer, not a connection reset (the kernel resets a
    socket closed with unread bytes; the relay half-closes and drains first)."""
    body = b"x" * 8_000_000
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", relay.port), timeout=20) as sock:
            sock.sendall(b"POST /early HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(body) + body)
            answer = _read_all(sock)
        assert answer.startswith(b"HTTP/1.1 413") and answer.endswith(b'{"detail": "request body too large"}')
        head = answer.split(b"\r\n\r\n", 1)[0].lower()
        # The relay closes after it (the rest of the body is not relayed): the head says so.
        assert head.count(b"connection:") == 1 and b"\r\nconnection: close" in head


def test_a_pooled_client_never_reuses_a_connection_closed_after_an_early_answer(relay):
    """A client that keeps connections alive (httpx) sends its next request on a new one:
    without Connection: close it raced the relay's close and got "Server disconnected"."""
    with httpx.Client(base_url=relay.url, timeout=20) as client:
        for _ in range(20):
            assert client.post("/early", content=b"x" * 400_000).status_code == 413
            assert client.get("/echo").status_code == 200


def test_a_head_over_the_limit_is_refused_while_it_arrives(tight):
    with socket.create_connection(("127.0.0.1", tight.port), timeout=5) as sock:
        # One header that never ends: refused once 4 KB are in, not held until it is whole.
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 20_000)
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 431") and b"over 4096 bytes" in answer
    many = b"".join(b"X-%d: %s\r\n" % (i, b"b" * 50) for i in range(200))
    assert raw(tight, b"GET /echo HTTP/1.1\r\nHost: a\r\n" + many, until_closed=True).startswith(b"HTTP/1.1 431")
    assert raw(tight, b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n").startswith(b"HTTP/1.1 200")


def test_slow_heads_time_out(tight):
    started = time.monotonic()
    slow = [socket.create_connection(("127.0.0.1", tight.port), timeout=5) for _ in range(50)]
    for sock in slow:
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: a\r\n")
    for _ in range(3):  # a byte now and then, never the end of the head
        time.sleep(0.2)
        for sock in slow:
            try:
                sock.send(b"X")
            except OSError:
                pass
        assert raw(tight, b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n").startswith(b"HTTP/1.1 200")
    silent = socket.create_connection(("127.0.0.1", tight.port), timeout=5)  # sends nothing at all
    for sock in [*slow, silent]:
        try:
            assert sock.recv(65536) == b""  # closed by the relay
        except ConnectionResetError:
            pass
        sock.close()
    assert time.monotonic() - started < 4


def test_connections_per_address_are_capped(tight):
    own = own_address()
    held = [socket.create_connection((own, tight.port), timeout=5) for _ in range(3)]
    try:
        with socket.create_connection((own, tight.port), timeout=5) as fourth:
            fourth.sendall(b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n")
            answer = _read_all(fourth)
        assert answer.startswith(b"HTTP/1.1 503") and b"too many connections" in answer
        # Loopback (a TLS terminator on this host) is not capped.
        assert raw(tight, b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n").startswith(b"HTTP/1.1 200")
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.2)
    with socket.create_connection((own, tight.port), timeout=5) as again:
        again.sendall(b"GET /echo HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        assert _read_all(again).startswith(b"HTTP/1.1 200")
