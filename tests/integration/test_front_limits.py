"""The front door of a real `dockyard serve` under clients that hold on: slow request heads,
huge heads, many connections from one address, bodies over the limit sent in one go."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from tests.harness import own_address, Server


@pytest.fixture(scope="module")
def front():
    srv = Server(host="0.0.0.0", request_head_timeout_s="2", max_connections_per_ip="20").start()
    srv.add_user("ann")
    yield srv
    srv.close()


def _rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _read_all(sock: socket.socket, reset_ok: bool = True) -> bytes:
    got = b""
    try:
        while chunk := sock.recv(65536):
            got += chunk
    except ConnectionResetError:
        if not reset_ok:
            raise
    return got




def test_fifty_slow_heads_leave_the_server_answering_with_bounded_memory(front):
    before = _rss_mb(front.process.pid)
    slow = [socket.create_connection(("127.0.0.1", front.port), timeout=10) for _ in range(50)]
    for sock in slow:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\nX-Slow: ")
    worst = 0.0
    for _ in range(5):  # a byte each now and then, never the end of the head
        for sock in slow:
            try:
                sock.send(b"z" * 1000)
            except OSError:
                pass
        started = time.monotonic()
        assert httpx.get(front.url + "/healthz", timeout=5).status_code == 200
        worst = max(worst, time.monotonic() - started)
        time.sleep(0.3)
    assert worst < 2.0
    assert _rss_mb(front.process.pid) - before < 100
    deadline = time.monotonic() + 10
    for sock in slow:  # the head timeout (2 s here) closed each of them
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        assert _read_all(sock) == b""
        sock.close()


def test_an_over_long_head_gets_431(front):
    with socket.create_connection(("127.0.0.1", front.port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 200_000)
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 431") and b"request head over 65536 bytes" in answer


def test_connections_from_one_address_are_capped(front):
    own = own_address()
    held = [socket.create_connection((own, front.port), timeout=5) for _ in range(20)]
    try:
        with socket.create_connection((own, front.port), timeout=5) as extra:
            extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
            assert _read_all(extra).startswith(b"HTTP/1.1 503")
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.3)
    assert httpx.get(f"http://{own}:{front.port}/healthz", timeout=5).status_code == 200


def test_a_body_over_the_limit_sent_in_one_go_gets_its_413(front):
    """The application answers 413 from Content-Length, before the body is read; the client,
    still sending, must read the answer (not a reset), every time."""
    token = front.tokens["ann"]
    body = b'{"image": "' + b"x" * 4_000_000 + b'"}'
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", front.port), timeout=30) as sock:
            sock.sendall(b"POST /api/v1/instances HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer " + token.encode()
                         + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            answer = _read_all(sock, reset_ok=False)
        assert answer.startswith(b"HTTP/1.1 413") and b"request body too large" in answer
