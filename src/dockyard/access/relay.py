"""An HTTP/1.1 reverse proxy on raw asyncio protocols.

Request heads are parsed (httptools, C) and rewritten; bodies and responses travel as
bytes, with a response parser only to see where each response ends; a WebSocket upgrade
answered with 101 turns the connection into a byte tunnel. Relaying bytes instead of
re-building each request in an HTTP client and each message in a WebSocket library is
what makes the proxy as fast as configurable-http-proxy (docs/benchmarks.md).

Requests on one client connection are served one at a time, in order (browsers do not
pipeline; a client that does is still answered correctly, just not in parallel). Each
client connection keeps its own upstream connections, one per address, reused across
its requests.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Union

import httptools

log = logging.getLogger(__name__)

# Request headers never forwarded: they belong to one hop (RFC 9110 7.6.1), or are set by
# the proxy itself (the client must not claim another address).
HOP = frozenset({b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
                 b"trailer", b"transfer-encoding", b"upgrade", b"x-forwarded-for", b"x-forwarded-proto",
                 b"x-forwarded-host"})
LOOPBACK = frozenset({"127.0.0.1", "::1"})
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE"})
CONNECT_TIMEOUT_S = 10
IDLE_CLIENT_S = 75        # a keep-alive connection with no request for this long is closed
STALE_UPSTREAM_S = 2.0    # older idle upstream connections are not trusted with a POST
REPLAY_LIMIT = 64 * 1024  # a request this small is kept to be sent again if the upstream had closed
RESPONSE_HEAD_LIMIT = 256 * 1024  # a response head that is rewritten is held whole first
# Closing a socket with unread bytes makes the kernel send a reset, and a reset can destroy
# the answer before the client reads it. So a connection closed while its client is still
# sending (an early 413, a refused upload) is half-closed and read from, for at most this long
# and this much, first.
LINGER_S = 10.0
LINGER_BYTES = 64 * 1024 * 1024


@dataclass
class Limits:
    """What one client may hold of the front door (settings: docs/security.md)."""

    head_bytes: int = 64 * 1024   # request line and headers, counted while they arrive
    head_timeout_s: float = 20.0  # for a whole request head, from its first byte (or the connection's start)
    connections_per_ip: int = 256  # open connections from one address (loopback: a proxy here, not limited)
    open: dict[str, int] = field(default_factory=dict)  # address -> open connections

    def admit(self, ip: str) -> bool:
        if ip in LOOPBACK:
            return True
        if self.open.get(ip, 0) >= self.connections_per_ip:
            return False
        self.open[ip] = self.open.get(ip, 0) + 1
        return True

    def release(self, ip: str) -> None:
        left = self.open.get(ip, 0) - 1
        if left > 0:
            self.open[ip] = left
        else:
            self.open.pop(ip, None)


@dataclass
class Route:
    """Where one request goes and how its head is rewritten on the way."""

    address: tuple[str, int] | str  # (host, port), or the path of a unix socket
    target: bytes                   # path and query to send upstream
    drop: frozenset[bytes] = frozenset()       # more request headers not to forward
    add: list[tuple[bytes, bytes]] = field(default_factory=list)
    cookie_filter: Callable[[bytes], bytes] | None = None
    # Rewrites each response head (status line and header lines, without the blank line).
    response_head: Callable[[bytes], bytes] | None = None


@dataclass
class Request:
    url: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    method: bytes = b""
    version: str = "1.1"
    keep_alive: bool = True
    upgrade: bool = False
    chunked: bool = False
    client_ip: str = ""
    body: list[bytes] = field(default_factory=list)  # arrived before an upstream took the request
    complete: bool = False
    upstream: Upstream | None = None
    route: Route | None = None
    replay: list[bytes] | None = field(default_factory=list)  # all bytes sent, while small
    replay_size: int = 0
    retried: bool = False
    head_size: int = 0
    refused: bytes | None = None  # the answer to a request that goes nowhere
    answered: bool = False  # by the proxy itself, before its body ended

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


Router = Callable[[Request], Union[Route, bytes, Awaitable[Union[Route, bytes]]]]


def response(status: int, detail: str | None = None, headers: dict[str, str] | None = None,
             body: bytes | None = None) -> bytes:
    """A whole HTTP/1.1 response, for answers the proxy gives itself (errors, redirects)."""
    from http import HTTPStatus

    if body is None:
        body = json.dumps({"detail": detail or HTTPStatus(status).phrase}).encode()
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", "Content-Type: application/json",
             f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def request_head(request: Request, route: Route) -> bytes:
    lines = [b"%s %s HTTP/%s" % (request.method, route.target, request.version.encode())]
    added = {name.lower() for name, _ in route.add}  # ours replace the client's
    for name, value in request.headers:
        lower = name.lower()
        if lower in HOP or lower in route.drop or lower in added:
            continue
        if lower == b"cookie" and route.cookie_filter:
            value = route.cookie_filter(value)
            if not value:
                continue
        lines.append(name + b": " + value)
    if request.chunked:
        lines.append(b"Transfer-Encoding: chunked")  # the body is re-chunked as it arrives
    if request.upgrade:
        lines += [b"Connection: Upgrade", b"Upgrade: " + (request.header(b"upgrade") or b"websocket")]
    forwarded_for, proto = request.client_ip.encode(), b"http"
    if request.client_ip in LOOPBACK:  # a TLS terminator on this host: keep what it says
        claimed, claimed_proto = request.header(b"x-forwarded-for"), request.header(b"x-forwarded-proto")
        if claimed:
            forwarded_for = claimed + b", " + forwarded_for
        if claimed_proto in (b"http", b"https"):
            proto = claimed_proto
    lines.append(b"X-Forwarded-For: " + forwarded_for)
    lines.append(b"X-Forwarded-Proto: " + proto)
    lines += [name + b": " + value for name, value in route.add]
    return b"\r\n".join(lines) + b"\r\n\r\n"


class Upstream(asyncio.Protocol):
    """One connection to a backend, serving one client connection's requests in turn."""

    def __init__(self, client: ClientConnection, address):
        self.client, self.address = client, address
        self.transport: asyncio.Transport | None = None
        self.parser = None
        self.request: Request | None = None
        self.interim = False      # a 1xx response (100 Continue) that precedes the real one
        self.answered = False     # some of the response has arrived
        self.finished: bool | None = None  # the response is complete: whether to keep alive
        self.surplus = False      # bytes beyond the response: a broken or hostile backend
        self.closed = False
        self.idle_since = time.monotonic()
        self.head: bytearray | None = None  # a response head being held to be rewritten
        # The response came while its request's body was still arriving: the client
        # connection is closed after it, and its head says so (Connection: close), or the
        # client would send its next request into a connection that is going away.
        self.closes_client = False

    # -- asyncio callbacks
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data: bytes):
        """Parse first, then pass the bytes on: bytes that nobody asked for (on an idle
        connection, or after the end of the response) must never reach the client, where
        they would pass for the answer to its next request, perhaps to the platform itself."""
        client = self.client
        if self.request is None or client.closing:
            client.forget(self)
            return
        if not self.answered and self.head is None and not self.request.complete:
            self.head = bytearray()  # held to say Connection: close
        self.answered = True
        upgraded = False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            upgraded = True
        except httptools.HttpParserError:
            self.surplus = True
        if self.surplus or (upgraded and not self.request.upgrade):
            log.warning("the backend at %s answered beyond its response: connection closed", self.address)
            client.close()
            self.close()
            return
        if self.head is None:
            client.write(data)
        elif not self._rewrite(data):
            log.warning("the backend at %s sent a response head over %s bytes", self.address, RESPONSE_HEAD_LIMIT)
            client.write(response(502, "the instance's response head is too large", {"Connection": "close"}))
            client.close()
            self.close()
            return
        if upgraded:
            client.start_tunnel(self)
        elif self.finished is not None:
            keep_alive, self.request = self.finished, None
            client.response_done(self, keep_alive)

    def _rewrite(self, data: bytes) -> bool:
        """Hold the response head until it is whole, pass it on rewritten, then the rest as it is."""
        self.head += data
        while self.head is not None:
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return len(self.head) <= RESPONSE_HEAD_LIMIT
            head, rest = bytes(self.head[:end]), bytes(self.head[end + 4:])
            interim = head[9:10] == b"1" and head[9:12] != b"101"  # "HTTP/1.1 100 ...": a head follows
            route = self.request.route
            if route.response_head:
                head = route.response_head(head)
            if not interim and not self.request.complete:
                head, self.closes_client = _connection_close(head), True
            self.client.write(head + b"\r\n\r\n")
            self.head = bytearray(rest) if interim else None
            if not interim and rest:
                self.client.write(rest)
        return True

    def connection_lost(self, exc):
        self.closed = True
        self.client.upstream_lost(self)

    def pause_writing(self):
        self.client.pause("upstream-full")

    def resume_writing(self):
        self.client.resume("upstream-full")

    # -- httptools callbacks (response parser)
    def on_message_begin(self):
        if self.finished is not None:
            self.surplus = True

    def on_headers_complete(self):
        if self.finished is not None:
            return
        status = self.parser.get_status_code()
        self.interim = 100 <= status < 200 and status != 101
        if self.request.method == b"HEAD" and not self.interim:
            # No body follows, whatever Content-Length says (the next request gets a new parser).
            self.finished = self.parser.should_keep_alive()

    def on_body(self, chunk: bytes):
        if self.finished is not None:
            self.surplus = True

    def on_message_complete(self):
        if self.interim:
            self.interim = False
        elif self.finished is None and self.parser.get_status_code() != 101:  # 101: a tunnel follows
            self.finished = self.parser.should_keep_alive()

    # -- used by the client side
    def begin(self, request: Request, head: bytes, replaying: bool = False) -> None:
        self.request, self.interim, self.answered, self.finished = request, False, False, None
        self.closes_client = False
        self.parser = httptools.HttpResponseParser(self)
        self.head = bytearray() if request.route.response_head else None
        request.upstream = self
        self.client.feed_from(self)
        self.send(request, head)
        if replaying:
            return
        for chunk in request.body:
            self.send(request, _frame(request, chunk))
        request.body = []
        if request.complete and request.chunked:
            self.send(request, b"0\r\n\r\n")

    def send(self, request: Request, data: bytes) -> None:
        if request.replay is not None:
            request.replay.append(data)
            request.replay_size += len(data)
            if request.replay_size > REPLAY_LIMIT:
                request.replay = None
        self.transport.write(data)

    def close(self) -> None:
        if self.transport and not self.closed:
            self.transport.close()


def _connection_close(head: bytes) -> bytes:
    lines = [line for line in head.split(b"\r\n")
             if line.split(b":", 1)[0].strip().lower() not in (b"connection", b"keep-alive")]
    return b"\r\n".join([*lines, b"Connection: close"])


class _Pipe(asyncio.Protocol):
    """One side of a tunnel: what arrives is written to the other side as it is. The event
    loop calls the other transport's `write` itself, with no Python frame per chunk."""

    def __init__(self, out: asyncio.Transport):
        self.out = out
        self.data_received = out.write

    def connection_lost(self, exc):
        self.out.close()

    def pause_writing(self):  # our side cannot take more: stop reading the other
        self.out.pause_reading()

    def resume_writing(self):
        self.out.resume_reading()


def _frame(request: Request, chunk: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(chunk), chunk) if request.chunked else chunk


class ClientConnection(asyncio.Protocol):
    """One browser or client connection: parse its requests, route each, relay the answers."""

    def __init__(self, router: Router, limits: Limits | None = None):
        self.router = router
        self.limits = limits or Limits()
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.client_ip = ""
        self.pending: deque[Request] = deque()  # parsed requests, the first being served
        self.upstreams: dict[object, Upstream] = {}
        self.upgrade_buffer: list[bytes] | None = None  # bytes after an upgrade request's head
        self.paused: set[str] = set()
        self.reading = True
        self.write_paused = False  # the client is not reading what we send it
        self.held: set[Upstream] = set()  # upstreams not read meanwhile
        self.idle_timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task | None = None
        self.closing = False
        self.admitted = False
        # The request head now arriving: whether one is, and its bytes read so far. A read in
        # which a head began holds nothing before it unless another request ended in it too.
        self.in_head = False
        self.head_seen = 0
        self.head_began = self.message_ended = False
        self.lingering: int | None = None  # bytes read and dropped since a lingering close began

    # -- asyncio callbacks
    def connection_made(self, transport):
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.client_ip = peer[0] if isinstance(peer, tuple) else "127.0.0.1"
        if not self.limits.admit(self.client_ip):
            transport.write(response(503, "too many connections from your address", {"Connection": "close"}))
            self.close(linger=True)
            return
        self.admitted = True
        self._arm_idle(self.limits.head_timeout_s)  # the first request must come soon

    def data_received(self, data: bytes):
        if self.lingering is not None:
            self.lingering += len(data)
            if self.lingering > LINGER_BYTES:
                self.transport.close()
            return
        if self.upgrade_buffer is not None:
            self.upgrade_buffer.append(data)
            return
        self.head_began = self.message_ended = False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            # The request was an upgrade: what follows its head is the new protocol's.
            self.upgrade_buffer = [data[exc.args[0]:]]
            self._update_reading()
        except httptools.HttpParserError:
            if not self.closing:
                self.write(response(400, "malformed HTTP request", {"Connection": "close"}))
                self.close(linger=True)
            return
        if self.in_head and not self.closing:
            if not (self.head_began and self.message_ended):
                self.head_seen += len(data)
            self._check_head_size()

    def eof_received(self):
        if self.lingering is not None:
            self.transport.close()  # the client is done sending: our answer is with it
        return False

    def connection_lost(self, exc):
        self.closing = True
        if self.admitted:
            self.admitted = False
            self.limits.release(self.client_ip)
        if self.idle_timer:
            self.idle_timer.cancel()
        if self.task:
            self.task.cancel()
        for upstream in list(self.upstreams.values()):
            upstream.close()

    def pause_writing(self):
        self.write_paused = True
        if self.pending and self.pending[0].upstream is not None:
            self.feed_from(self.pending[0].upstream)

    def resume_writing(self):
        self.write_paused = False
        for upstream in self.held:
            if not upstream.closed:
                upstream.transport.resume_reading()
        self.held.clear()

    def feed_from(self, upstream: Upstream) -> None:
        """An upstream now answering us: not read while the client cannot take more."""
        if self.write_paused and upstream not in self.held:
            self.held.add(upstream)
            upstream.transport.pause_reading()

    # -- httptools callbacks (request parser)
    def on_message_begin(self):
        self._arm_idle(self.limits.head_timeout_s)  # the head must come whole, and soon
        self.pending.append(Request(client_ip=self.client_ip))
        self.in_head, self.head_began, self.head_seen = True, True, 0

    def on_url(self, url: bytes):
        request = self.pending[-1]
        request.url += url
        request.head_size += len(url)
        self._check_head_size()

    def on_header(self, name: bytes, value: bytes):
        request = self.pending[-1]
        request.headers.append((name, value))
        request.head_size += len(name) + len(value) + 4
        self._check_head_size()

    def _check_head_size(self) -> None:
        """A head over the limit is refused as it arrives, not held until it is whole."""
        if self.closing or not self.pending:
            return
        if max(self.pending[-1].head_size, self.head_seen) > self.limits.head_bytes:
            self.write(response(431, f"request head over {self.limits.head_bytes} bytes", {"Connection": "close"}))
            self.close(linger=True)

    def on_headers_complete(self):
        self.in_head = False
        if self.closing:
            return
        if self.idle_timer:
            self.idle_timer.cancel()
            self.idle_timer = None
        request = self.pending[-1]
        parser = self.parser
        request.method, request.version = parser.get_method(), parser.get_http_version()
        request.keep_alive, request.upgrade = parser.should_keep_alive(), parser.should_upgrade()
        encodings = [value.strip().lower() for name, value in request.headers if name.lower() == b"transfer-encoding"]
        request.chunked = bool(encodings)
        if encodings and encodings != [b"chunked"]:
            # Anything but one plain "chunked" is read differently by different servers:
            # the classic way to smuggle a request past a proxy.
            request.refused = response(400, "Transfer-Encoding other than one 'chunked' is not accepted",
                                       {"Connection": "close"})
        if len(self.pending) == 1:
            self._start(request)
        self._update_reading()

    def on_body(self, chunk: bytes):
        request = self.pending[-1]
        if request.answered:
            return
        if request.upstream is not None:
            request.upstream.send(request, _frame(request, chunk))
        else:
            request.body.append(chunk)

    def on_message_complete(self):
        self.message_ended = True
        request = self.pending[-1]
        request.complete = True
        if request.answered:
            self._finished(request, keep_alive=request.keep_alive and not request.upgrade)
        elif request.upstream is not None and request.chunked:
            request.upstream.send(request, b"0\r\n\r\n")

    # -- serving requests in turn
    def _start(self, request: Request) -> None:
        if request.refused:
            self.write(request.refused)
            self.close(linger=True)
            return
        try:
            decision = self.router(request)
        except Exception:
            log.exception("routing %s failed", request.url)
            decision = response(500, "internal error in the proxy")
        if isinstance(decision, (Route, bytes)):
            self._dispatch(request, decision)
        else:
            self.task = asyncio.ensure_future(self._await(request, decision))

    async def _await(self, request: Request, decision) -> None:
        try:
            decision = await decision
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("routing %s failed", request.url)
            decision = response(500, "internal error in the proxy")
        self.task = None
        self._dispatch(request, decision)

    def _dispatch(self, request: Request, decision: Route | bytes) -> None:
        if self.closing:
            return
        if isinstance(decision, bytes):  # answered by the proxy itself
            if request.method == b"HEAD":
                decision = decision.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
            self.write(decision)
            if request.complete:
                self._finished(request, keep_alive=request.keep_alive and not request.upgrade)
            else:
                request.answered = True  # its body is read and dropped, then the next request
                self._update_reading()
            return
        request.route = decision
        upstream = self.upstreams.get(decision.address)
        stale = upstream is not None and (
            upstream.closed or (request.method not in IDEMPOTENT
                                and time.monotonic() - upstream.idle_since > STALE_UPSTREAM_S))
        if upstream is not None and not stale:
            upstream.begin(request, request_head(request, decision))
            self._update_reading()
            return
        if upstream is not None:
            self.forget(upstream)
        self.task = asyncio.ensure_future(self._connect(request))

    async def _connect(self, request: Request, replay: bytes | None = None) -> None:
        """Open a connection to the request's upstream and send it there (again, if replay)."""
        loop = asyncio.get_running_loop()
        address = request.route.address
        make = lambda: Upstream(self, address)  # noqa: E731
        try:
            if isinstance(address, str):
                connecting = loop.create_unix_connection(make, address)
            else:
                connecting = loop.create_connection(make, *address)
            _, upstream = await asyncio.wait_for(connecting, CONNECT_TIMEOUT_S)
        except (OSError, asyncio.TimeoutError) as exc:
            self.task = None
            self._dispatch(request, response(502, f"the instance did not answer on this port: {type(exc).__name__}"))
            return
        self.task = None
        if self.closing:
            upstream.close()
            return
        if upstream.closed or upstream.transport.is_closing():  # it spoke first (not HTTP), or went
            self._dispatch(request, response(502, "the instance's port does not speak HTTP"))
            return
        self.upstreams[address] = upstream
        if replay is None:
            upstream.begin(request, request_head(request, request.route))
        else:
            upstream.begin(request, replay, replaying=True)
        self._update_reading()

    def response_done(self, upstream: Upstream, keep_alive: bool) -> None:
        request = self.pending[0]
        upstream.idle_since = time.monotonic()
        if not keep_alive:
            self.forget(upstream)
        if request.upgrade and self.upgrade_buffer is not None:
            # Refused upgrade: back to HTTP, with whatever the client sent meanwhile.
            buffered, self.upgrade_buffer = b"".join(self.upgrade_buffer), None
            self.parser = httptools.HttpRequestParser(self)
            self._finished(request, keep_alive=request.keep_alive)
            if buffered and not self.closing:
                self.data_received(buffered)
            return
        # A response that came before its request's body ended leaves the rest of that
        # body on the connection, indistinguishable from a next request: close after it.
        self._finished(request, keep_alive=request.complete and request.keep_alive and not upstream.closes_client)

    def _finished(self, request: Request, keep_alive: bool) -> None:
        self.pending.popleft()
        request.upstream = None
        if not keep_alive:
            self.close(linger=not request.complete)
            return
        if self.pending:
            self._start(self.pending[0])
        else:
            self._arm_idle()
        self._update_reading()

    def upstream_lost(self, upstream: Upstream) -> None:
        self.forget(upstream)
        if self.closing:
            return
        if not self.pending or self.pending[0].upstream is not upstream:
            return  # an idle upstream connection closed: the next request opens another
        request = self.pending[0]
        if not upstream.answered and self._may_replay(request):
            # The upstream had closed the kept-alive connection as the request went out.
            replay, request.replay, request.retried, request.upstream = b"".join(request.replay), None, True, None
            self.task = asyncio.ensure_future(self._connect(request, replay))
        elif upstream.answered:
            self.close(linger=not request.complete)  # a response delimited by the connection's end: pass the end on
        else:
            self.write(response(502, "the instance closed the connection without answering", {"Connection": "close"}))
            self.close(linger=not request.complete)

    @staticmethod
    def _may_replay(request: Request) -> bool:
        return (request.complete and request.replay is not None and not request.retried
                and request.method in IDEMPOTENT and not request.upgrade)

    def start_tunnel(self, upstream: Upstream) -> None:
        """The upstream said 101: from here on the two connections are piped to each
        other, bytes untouched, and this object steps aside."""
        del self.upstreams[upstream.address]
        self.closing = True  # no more HTTP on this connection: what this object held goes
        if self.idle_timer:
            self.idle_timer.cancel()
        for other in self.upstreams.values():
            other.close()
        self.pending.clear()
        buffered, self.upgrade_buffer = b"".join(self.upgrade_buffer or []), None
        if buffered:
            upstream.transport.write(buffered)
        client, server = self.transport, upstream.transport
        client.set_protocol(_Pipe(server))
        server.set_protocol(_Pipe(client))
        client.resume_reading()  # paused while the upgrade was pending
        server.resume_reading()

    # -- flow control and helpers
    def pause(self, reason: str) -> None:
        self.paused.add(reason)
        self._update_reading()

    def resume(self, reason: str) -> None:
        self.paused.discard(reason)
        self._update_reading()

    def _update_reading(self) -> None:
        """Read from the client only while its request can go somewhere at once."""
        if self.closing or self.transport is None:
            return
        waiting = self.upgrade_buffer is not None or len(self.pending) > 1 or (
            self.pending and self.pending[0].upstream is None and not self.pending[0].answered)
        should_read = not self.paused and not waiting
        if should_read != self.reading:
            self.reading = should_read
            (self.transport.resume_reading if should_read else self.transport.pause_reading)()

    def forget(self, upstream: Upstream) -> None:
        """Stop using an upstream connection for requests, and close it."""
        if self.upstreams.get(upstream.address) is upstream:
            del self.upstreams[upstream.address]
        self.held.discard(upstream)
        if "upstream-full" in self.paused and self.pending and self.pending[0].upstream is upstream:
            self.resume("upstream-full")  # a closed transport never says it drained
        upstream.close()

    def _arm_idle(self, seconds: float = IDLE_CLIENT_S) -> None:
        if self.idle_timer:
            self.idle_timer.cancel()
        self.idle_timer = asyncio.get_running_loop().call_later(seconds, self.close)

    def write(self, data: bytes) -> None:
        if not self.closing:
            self.transport.write(data)

    def close(self, linger: bool = False) -> None:
        """Close after what is buffered has been sent. With `linger` (the client may still be
        sending), shut down our side only and read and drop what comes, so that the client
        reads our answer before the connection goes (LINGER_S, LINGER_BYTES)."""
        if self.closing:
            return
        self.closing = True
        transport = self.transport
        if not linger or not transport.can_write_eof():
            transport.close()
            return
        for upstream in list(self.upstreams.values()):
            upstream.close()
        self.lingering = 0
        transport.write_eof()
        transport.resume_reading()
        if self.idle_timer:
            self.idle_timer.cancel()
        self.idle_timer = asyncio.get_running_loop().call_later(LINGER_S, transport.close)
