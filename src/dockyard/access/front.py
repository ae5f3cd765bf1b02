"""The server's front door: one port for the API, the console and the access paths.

`dockyard serve` listens here with the byte relay (access/relay.py). Requests for an
instance (/instances/<id>/jupyter/..., /instances/<id>/ports/<port>/..., /shared/<link>/...)
are authorised (access/targets.py) and relayed straight to the container; everything else
goes to the FastAPI application, which uvicorn serves on a private unix socket in the same
process and event loop. This is JupyterHub's split (configurable-http-proxy in front of the
hub) in one process: proxied notebook traffic never passes through the ASGI stack.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import unquote

import httptools
import uvicorn

from dockyard.access import targets
from dockyard.access.relay import ClientConnection, Request, Route, response
from dockyard.core.errors import DockyardError
from dockyard.services import sessions

log = logging.getLogger(__name__)

_INSTANCE_PATH = re.compile(rb"^/instances/([^/]+)/(?:jupyter|ports/([0-9]{1,5}))(/.*)?$")
_SHARED_PATH = re.compile(rb"^/shared/([^/]+)(/.*)?$")
_INSTANCE_HEADERS = frozenset({b"authorization", targets.PROXY_SECRET_HEADER.lower().encode()})
_COOKIE = sessions.COOKIE.encode()
_READS = frozenset({b"GET", b"HEAD", b"OPTIONS"})  # an open tab polls with these


def without_our_cookie(value: bytes) -> bytes:
    """The platform's session must not reach code running in the instance."""
    kept = [part for part in value.split(b";") if part.strip() and not part.strip().startswith(_COOKIE + b"=")]
    return b";".join(kept)


def _cookie(request: Request) -> str | None:
    for part in (request.header(b"cookie") or b"").split(b";"):
        name, _, value = part.strip().partition(b"=")
        if name == _COOKIE:
            return value.decode("latin-1")
    return None


def _log_failure(future: asyncio.Future) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("recording Jupyter activity failed: %s", future.exception())


def _error(exc: DockyardError) -> bytes:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
    return response(exc.status_code, exc.message, headers)


class Front:
    """Routes each request: to the application's socket, or to an instance's container."""

    def __init__(self, app, app_socket: str):
        self.app, self.app_socket = app, app_socket
        # Look-ups that miss the cache (database, `docker inspect`) run here, off the loop.
        self.pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="access")

    def route(self, request: Request):
        url = httptools.parse_url(request.url)
        path = url.path
        if path.startswith(b"/instances/"):
            match = _INSTANCE_PATH.match(path)
            if match:
                return self._instance(request, url, match)
        elif path.startswith(b"/shared/"):
            match = _SHARED_PATH.match(path)
            if match:
                return self._shared(request, url, match)
        return Route(self.app_socket, request.url)

    def _instance(self, request: Request, url, match):
        key = unquote(match.group(1).decode("latin-1"))
        port = int(match.group(2)) if match.group(2) else None
        rest = match.group(3)
        if port is not None and not 1 <= port <= 65535:
            return response(404, f"port {port} is outside 1-65535")
        authorization = request.header(b"authorization")
        authorization = authorization.decode("latin-1") if authorization else None
        platform = self.app.state.platform
        hit = targets.cached(platform, (authorization, _cookie(request), key, port))
        if hit:
            return self._to_instance(request, url, key, port, rest, hit)
        return self._resolve(request, url, key, port, rest, authorization)

    async def _resolve(self, request, url, key, port, rest, authorization):
        loop = asyncio.get_running_loop()
        try:
            target = await loop.run_in_executor(self.pool, targets.owned, self.app.state.platform,
                                                authorization, _cookie(request), key, port)
        except DockyardError as exc:
            return _error(exc)
        return self._to_instance(request, url, key, port, rest, target)

    def _to_instance(self, request: Request, url, key: str, port: int | None, rest: bytes | None,
                     target: targets.Target):
        query = b"?" + url.query if url.query else b""
        if port is not None and rest is not None:
            return Route((target.ip, port), (rest or b"/") + query, _INSTANCE_HEADERS,
                         cookie_filter=without_our_cookie)
        base = f"/instances/{target.instance_id}/" + ("jupyter" if port is None else f"ports/{port}")
        base = base.encode()
        if key != target.instance_id or rest is None:
            # By name, or without the slash: go to the id's URL (the base URL JupyterLab
            # knows), with the slash (relative links in the pages resolve under it).
            location = (base + (rest or b"/") + query).decode("latin-1")
            return response(307, "see Location", {"Location": location})
        # Only what a person does counts (a save, a new kernel); an open tab's polling GETs do
        # not. Kernels and terminals at work are read from JupyterLab itself (background/activity.py).
        if request.method not in _READS and targets.activity_due(target.instance_id):
            touching = asyncio.get_running_loop().run_in_executor(self.pool, targets.touch, self.app.state.platform,
                                                                  target.instance_id)
            touching.add_done_callback(_log_failure)
        secret = (targets.PROXY_SECRET_HEADER.encode(), (target.jupyter_token or "").encode())
        return Route((target.ip, targets.JUPYTER_PORT), request.url, _INSTANCE_HEADERS, [secret],
                     cookie_filter=without_our_cookie)

    def _shared(self, request: Request, url, match):
        link = unquote(match.group(1).decode("latin-1"))
        rest = match.group(2) or b"/"
        query = b"?" + url.query if url.query else b""
        hit = targets.cached(self.app.state.platform, ("shared", link))
        if hit:
            return Route((hit.ip, hit.port), rest + query, _INSTANCE_HEADERS, cookie_filter=without_our_cookie)
        return self._resolve_shared(link, rest + query)

    async def _resolve_shared(self, link: str, target_path: bytes):
        loop = asyncio.get_running_loop()
        try:
            target = await loop.run_in_executor(self.pool, targets.shared, self.app.state.platform, link)
        except DockyardError as exc:
            return _error(exc)
        return Route((target.ip, target.port), target_path, _INSTANCE_HEADERS, cookie_filter=without_our_cookie)


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
    try:
        listener = await asyncio.get_running_loop().create_server(
            lambda: ClientConnection(front.route), host, port, reuse_address=True, backlog=1024)
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


def serve(app, host: str, port: int) -> None:
    """Run the application behind the front until a signal stops it."""
    import uvloop

    socket_dir = tempfile.mkdtemp(prefix="dockyard-")
    try:
        uvloop.run(_serve(app, host, port, socket_dir))
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)
