"""The server's front door: one port for the API, the console and the access paths.

`dockyard serve` listens here with the byte relay (access/relay.py). The Host of a request
says which origin it is for (access/origins.py):

- an instance's own host (`{id}.localhost` by default) serves that instance's paths only:
  /instances/<id>/jupyter/..., /instances/<id>/ports/<port>/..., /shared/<link>/..., and
  /_dockyard/open, which trades a one-time ticket for a cookie of that host. Requests are
  authorised (access/targets.py) and relayed straight to the container; its answers never
  set a cookie that could reach the console's or ours.
- any other host is the console's: the same instance paths are redirected to the
  instance's host (a signed-in browser with a ticket), never served; everything else goes
  to the FastAPI application, which uvicorn serves on a private unix socket in the same
  process and event loop.

This is JupyterHub's split (configurable-http-proxy in front of the hub, with
`subdomain_host`) in one process: proxied notebook traffic never passes through the ASGI
stack, and a page that an instance serves never runs on the console's origin.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import signal
import tempfile
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs, quote, unquote, urlencode

import httptools
import uvicorn

from dockyard.access import targets
from dockyard.access.origins import InstanceOrigins
from dockyard.access.relay import LOOPBACK, ClientConnection, Limits, Request, Route, response
from dockyard.core.errors import DockyardError
from dockyard.services import sessions

log = logging.getLogger(__name__)

_INSTANCE_PATH = re.compile(rb"^/instances/([^/]+)/(?:jupyter|ports/([0-9]{1,5}))(/.*)?$")
_SHARED_PATH = re.compile(rb"^/shared/([^/]+)(/.*)?$")
_OPEN_PATH = b"/_dockyard/open"
_INSTANCE_HEADERS = frozenset({b"authorization", targets.PROXY_SECRET_HEADER.lower().encode()})
_OUR_COOKIES = frozenset(name.encode() for name in (sessions.COOKIE, sessions.INSTANCE_COOKIE, "dockyard_login_csrf"))
_SAFE = frozenset({b"GET", b"HEAD", b"OPTIONS"})
_URL_SAFE = "/?&=%:@!$'()*+,;~-._"  # kept as they are when a path is quoted into Location
# A shared page runs in an opaque origin: it cannot read or write the cookies or pages of
# its host (the owner's JupyterLab), whoever opens it. Its own requests to the link are
# cross-origin, so its answers allow any origin: nothing behind a share link needs or gets
# a credential.
SHARED_CSP = b"sandbox allow-scripts allow-forms allow-popups allow-downloads allow-modals"
_SHARED_DROPPED = frozenset({b"set-cookie", b"access-control-allow-origin", b"access-control-allow-credentials"})


def without_our_cookies(value: bytes) -> bytes:
    """The platform's cookies must not reach code running in the instance."""
    parts = (part.strip() for part in value.split(b";"))
    return b"; ".join(part for part in parts if part and part.split(b"=", 1)[0] not in _OUR_COOKIES)


def _no_cookies(_value: bytes) -> bytes:
    return b""


def _header_name(line: bytes) -> bytes:
    return line.split(b":", 1)[0].strip().lower()


def _reaches_ours(line: bytes) -> bool:
    """A Set-Cookie that could replace or shadow a cookie of the platform: one of our names,
    or any Domain attribute (that is how a cookie reaches the parent domain, the console's)."""
    if _header_name(line) != b"set-cookie":
        return False
    cookie = line.split(b":", 1)[1]
    name, _, _ = cookie.split(b";", 1)[0].partition(b"=")
    attributes = [part.strip().lower() for part in cookie.split(b";")[1:]]
    return name.strip() in _OUR_COOKIES or any(a.startswith(b"domain") for a in attributes)


def instance_response(head: bytes) -> bytes:
    lines = head.split(b"\r\n")
    return b"\r\n".join([lines[0]] + [line for line in lines[1:] if not _reaches_ours(line)])


def shared_response(head: bytes) -> bytes:
    lines = head.split(b"\r\n")
    kept = [line for line in lines[1:] if _header_name(line) not in _SHARED_DROPPED]
    return b"\r\n".join([lines[0], *kept, b"Content-Security-Policy: " + SHARED_CSP,
                           b"Access-Control-Allow-Origin: *"])


def _cookie(request: Request, name: str) -> str | None:
    for part in (request.header(b"cookie") or b"").split(b";"):
        key, _, value = part.strip().partition(b"=")
        if key == name.encode():
            return value.decode("latin-1")
    return None


def _scheme(request: Request) -> str:
    """https when a TLS terminator on this host says so (as the relay trusts it)."""
    return "https" if request.client_ip in LOOPBACK and request.header(b"x-forwarded-proto") == b"https" else "http"


def _foreign(request: Request) -> bool:
    """A request that a page of another origin made: a form post, a fetch or a WebSocket
    from elsewhere must not act with this host's cookie (JupyterLab trusts our requests)."""
    if request.method in _SAFE and not request.upgrade:
        return False
    origin = request.header(b"origin")
    if origin is None:
        return request.header(b"sec-fetch-site") in (b"cross-site", b"same-site")
    return origin.split(b"://", 1)[-1].lower() != (request.header(b"host") or b"").lower()


def _log_failure(future: asyncio.Future) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("recording Jupyter activity failed: %s", future.exception())


def _port_path(target: targets.Target, rest: bytes) -> bytes:
    """What a service port's app is sent: the part after its base path, or, for an app
    started with that base path (keep_path), the whole /instances/<id>/ports/<port>/... path."""
    if target.keep_path:
        return f"/instances/{target.instance_id}/ports/{target.port}".encode() + rest
    return rest


def _error(exc: DockyardError) -> bytes:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
    return response(exc.status_code, exc.message, headers)


def _see(location: str, status: int = 307, **headers: str) -> bytes:
    return response(status, "see Location", {"Location": location, "Cache-Control": "no-store", **headers})


class Front:
    """Routes each request: to the application's socket, or to an instance's container."""

    def __init__(self, app, app_socket: str):
        self.app, self.app_socket = app, app_socket
        self.origins = InstanceOrigins(app.state.platform.settings.instance_domain)
        # Look-ups that miss the cache (database, `docker inspect`) run here, off the loop.
        self.pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="access")

    def route(self, request: Request):
        url = httptools.parse_url(request.url)
        host_id = self.origins.instance_of(request.header(b"host"))
        if host_id is not None:
            return self._on_instance_host(request, url, host_id)
        path = url.path
        if path.startswith(b"/instances/"):
            match = _INSTANCE_PATH.match(path)
            if match:
                return self._toward_instance(request, url, match)
        elif path.startswith(b"/shared/"):
            match = _SHARED_PATH.match(path)
            if match:
                return self._toward_shared(request, url, match)
        return Route(self.app_socket, request.url)

    async def _off_loop(self, function, *args):
        return await asyncio.get_running_loop().run_in_executor(self.pool, function, self.app.state.platform, *args)

    # -- on the console's host: instance paths go to the instance's host

    def _base(self, request: Request, instance_id: str) -> str:
        host = (request.header(b"host") or b"").decode("latin-1")
        return self.origins.base(instance_id, _scheme(request), host)

    def _toward_instance(self, request: Request, url, match):
        key = unquote(match.group(1).decode("latin-1"))
        port = int(match.group(2)) if match.group(2) else None
        if port is not None and not 1 <= port <= 65535:
            return response(404, f"port {port} is outside 1-65535")
        if request.method not in (b"GET", b"HEAD") or request.upgrade:
            return response(421, "an instance is served on its own host, not the console's: "
                                 "use the address that the console or `dockyard ports ls` gives")
        return self._redirect_to_instance(request, url, key, port, match.group(3))

    async def _redirect_to_instance(self, request: Request, url, key: str, port: int | None, rest: bytes | None):
        authorization = request.header(b"authorization")
        authorization = authorization.decode("latin-1") if authorization else None
        try:
            instance_id, ticket = await self._off_loop(targets.ticket, authorization,
                                                       _cookie(request, sessions.COOKIE), key, port)
        except DockyardError as exc:
            return _error(exc)
        path = f"/instances/{instance_id}/" + ("jupyter" if port is None else f"ports/{port}")
        path += (rest or b"/").decode("latin-1") + ("?" + url.query.decode("latin-1") if url.query else "")
        base = self._base(request, instance_id)
        if ticket is None:  # an API client: its token works on the instance's host as well
            return _see(base + path)
        return _see(f"{base}{_OPEN_PATH.decode()}?" + urlencode({"ticket": ticket, "next": path}), 303,
                    **{"Referrer-Policy": "no-referrer"})

    def _toward_shared(self, request: Request, url, match):
        if request.upgrade:
            return response(421, "a share link is served on its instance's own host")
        return self._redirect_shared(request, url, unquote(match.group(1).decode("latin-1")), match.group(2))

    async def _redirect_shared(self, request: Request, url, link: str, rest: bytes | None):
        try:
            instance_id = await self._off_loop(targets.shared_instance, link)
        except DockyardError as exc:
            return _error(exc)
        query = "?" + url.query.decode("latin-1") if url.query else ""
        return _see(f"{self._base(request, instance_id)}/shared/{quote(link)}{(rest or b'/').decode('latin-1')}{query}")

    # -- on an instance's host: that instance's paths only

    def _on_instance_host(self, request: Request, url, host_id: str):
        path = url.path
        match = _INSTANCE_PATH.match(path)
        if match:
            if _foreign(request):
                return response(403, "a request from a page of another origin is refused here")
            return self._instance(request, url, match, host_id)
        match = _SHARED_PATH.match(path)
        if match:
            return self._shared(request, url, match, host_id)
        if path == _OPEN_PATH:
            return self._open(request, url, host_id)
        if path == b"/":
            return _see(f"/instances/{host_id}/jupyter/lab")
        return response(404, "not found: an instance's host serves its JupyterLab, ports and share links only")

    async def _open(self, request: Request, url, host_id: str):
        """Trade a ticket from the console (or `dockyard jupyter`) for this host's cookie."""
        query = parse_qs((url.query or b"").decode("latin-1"))
        ticket, next_path = query.get("ticket", [""])[-1], query.get("next", [""])[-1]
        if not next_path.startswith("/") or next_path.startswith("//") or "\\" in next_path:
            next_path = f"/instances/{host_id}/jupyter/lab"
        try:
            session = await self._off_loop(targets.open_session, ticket, host_id)
        except DockyardError as exc:
            cookie = _cookie(request, sessions.INSTANCE_COOKIE)
            if cookie and await self._off_loop(targets.signed_in, cookie, host_id):
                return _see(quote(next_path, safe=_URL_SAFE), 303)  # a spent ticket again (Back): go on
            return _error(exc)
        lifetime = int(sessions.INSTANCE_SESSION_LIFETIME.total_seconds())
        # No Domain: the cookie is this host's only, never its parent's or a sibling's.
        cookie = f"{sessions.INSTANCE_COOKIE}={session}; Path=/; Max-Age={lifetime}; HttpOnly; SameSite=Lax"
        if _scheme(request) == "https":
            cookie += "; Secure"
        return _see(quote(next_path, safe=_URL_SAFE), 303,
                    **{"Set-Cookie": cookie, "Referrer-Policy": "no-referrer"})

    def _instance(self, request: Request, url, match, host_id: str):
        key = unquote(match.group(1).decode("latin-1"))
        port = int(match.group(2)) if match.group(2) else None
        rest = match.group(3)
        if port is not None and not 1 <= port <= 65535:
            return response(404, f"port {port} is outside 1-65535")
        authorization = request.header(b"authorization")
        authorization = authorization.decode("latin-1") if authorization else None
        cookie = _cookie(request, sessions.INSTANCE_COOKIE)
        hit = targets.cached(self.app.state.platform, (authorization, cookie, host_id, key, port))
        if hit:
            return self._to_instance(request, url, key, port, rest, hit)
        return self._resolve(request, url, host_id, key, port, rest, authorization, cookie)

    async def _resolve(self, request, url, host_id, key, port, rest, authorization, cookie):
        try:
            target = await self._off_loop(targets.owned, authorization, cookie, host_id, key, port)
        except DockyardError as exc:
            return _error(exc)
        return self._to_instance(request, url, key, port, rest, target)

    def _to_instance(self, request: Request, url, key: str, port: int | None, rest: bytes | None,
                     target: targets.Target):
        query = b"?" + url.query if url.query else b""
        if port is not None and rest is not None and (key == target.instance_id or not target.keep_path):
            return Route((target.ip, port), _port_path(target, rest or b"/") + query, _INSTANCE_HEADERS,
                         cookie_filter=without_our_cookies, response_head=instance_response)
        base = f"/instances/{target.instance_id}/" + ("jupyter" if port is None else f"ports/{port}")
        base = base.encode()
        if key != target.instance_id or rest is None:
            # By name, or without the slash: go to the id's URL (the base URL JupyterLab
            # knows), with the slash (relative links in the pages resolve under it).
            return _see((base + (rest or b"/") + query).decode("latin-1"))
        # Only what a person does counts (a save, a new kernel); an open tab's polling GETs do
        # not. Kernels and terminals at work are read from JupyterLab itself (background/activity.py).
        if request.method not in _SAFE and targets.activity_due(target.instance_id):
            touching = asyncio.get_running_loop().run_in_executor(self.pool, targets.touch, self.app.state.platform,
                                                                  target.instance_id)
            touching.add_done_callback(_log_failure)
        secret = (targets.PROXY_SECRET_HEADER.encode(), (target.jupyter_token or "").encode())
        return Route((target.ip, targets.JUPYTER_PORT), request.url, _INSTANCE_HEADERS, [secret],
                     cookie_filter=without_our_cookies, response_head=instance_response)

    def _shared(self, request: Request, url, match, host_id: str):
        link = unquote(match.group(1).decode("latin-1"))
        if request.method == b"OPTIONS" and request.header(b"access-control-request-method"):
            # The shared page's own requests are cross-origin (its origin is opaque).
            return response(204, body=b"", headers={
                "Access-Control-Allow-Origin": "*", "Access-Control-Max-Age": "600",
                "Access-Control-Allow-Methods": "GET, HEAD, POST, PUT, PATCH, DELETE",
                "Access-Control-Allow-Headers": (request.header(b"access-control-request-headers") or b"").decode(
                    "latin-1")})
        rest = match.group(2) or b"/"
        query = b"?" + url.query if url.query else b""
        hit = targets.cached(self.app.state.platform, ("shared", link))
        if hit:
            return self._to_shared(hit, host_id, rest, query)
        return self._resolve_shared(link, host_id, rest, query)

    async def _resolve_shared(self, link: str, host_id: str, rest: bytes, query: bytes):
        try:
            target = await self._off_loop(targets.shared, link)
        except DockyardError as exc:
            return _error(exc)
        return self._to_shared(target, host_id, rest, query)

    @staticmethod
    def _to_shared(target: targets.Target, host_id: str, rest: bytes, query: bytes):
        if target.instance_id != host_id:  # another instance's link: never on this host
            return response(404, "this link does not exist or was revoked")
        return Route((target.ip, target.port), _port_path(target, rest) + query, _INSTANCE_HEADERS,
                     cookie_filter=_no_cookies, response_head=shared_response)


async def _serve(app, host: str, port: int, socket_dir: str) -> None:
    app_socket = os.path.join(socket_dir, "app.sock")
    # The front is the only client of this socket and sets X-Forwarded-For itself; the
    # socket's folder is private (mkdtemp: 0700). Keep-alive is the front's to time out.
    config = uvicorn.Config(app, uds=app_socket, log_level="info", timeout_graceful_shutdown=5,
                            proxy_headers=True, forwarded_allow_ips="*", timeout_keep_alive=3600)
    server = uvicorn.Server(config)
    serving = asyncio.ensure_future(server.serve())
    while not server.started:
        if serving.done():
            return serving.result()  # start-up failed; uvicorn said why
        await asyncio.sleep(0.02)
    front = Front(app, app_socket)
    settings = app.state.platform.settings
    limits = Limits(head_bytes=settings.request_head_bytes, head_timeout_s=settings.request_head_timeout_s,
                    connections_per_ip=settings.max_connections_per_ip)
    try:
        listener = await asyncio.get_running_loop().create_server(
            lambda: ClientConnection(front.route, limits), host, port, reuse_address=True, backlog=1024)
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", host, port, exc)
        server.should_exit = True
        await serving
        raise SystemExit(1)
    log.info("Dockyard listening on http://%s:%s", host, port)
    try:
        await serving
    finally:
        listener.close()
        front.pool.shutdown(wait=False)


def _exit_on_sigterm(_signum: int, _frame) -> None:
    raise SystemExit(0)  # a stop asked for: a clean exit (a service manager reads 0 so)


def serve(app, host: str, port: int) -> None:
    """Run the application behind the front until a signal stops it."""
    import uvloop

    socket_dir = tempfile.mkdtemp(prefix="dockyard-")
    # uvicorn raises the SIGTERM it stopped on again once it is done: as SystemExit, not
    # the default action that ends the process at once, the socket's folder is removed.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        uvloop.run(_serve(app, host, port, socket_dir))
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)
