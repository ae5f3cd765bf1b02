"""/instances/<id>/jupyter/, /instances/<id>/ports/<port>/ and /shared/<link>/: who may
pass, and where to."""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass

import httpx
from fastapi import APIRouter, Request, WebSocket
from fastapi.responses import RedirectResponse
from starlette.concurrency import run_in_threadpool
from sqlalchemy import select

from dockyard.access.proxy import forward_http, forward_websocket
from dockyard.core.errors import Conflict, DockyardError, NotFound, Unauthorized
from dockyard.core.states import Status
from dockyard.db.models import Instance, InstanceEvent, ServicePort, User, utcnow
from dockyard.services import instances, sessions, users
from dockyard.services.platform import Platform

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
JUPYTER_PORT = 8888
# JupyterLab in our images trusts requests that carry the instance's secret here
# (images/pytorch-cuda/dockyard_jupyter_auth.py), so it keeps no token to leak.
PROXY_SECRET_HEADER = "X-Dockyard-Proxy-Secret"
ACTIVITY_EVERY_S = 30


@dataclass
class Target:
    instance_id: str
    ip: str
    jupyter_token: str | None


def _caller(platform: Platform, authorization: str | None, cookie: str | None) -> User:
    with platform.sessions.begin() as db:
        if authorization and authorization.lower().startswith("bearer "):
            user = users.user_for_token(db, authorization[7:].strip())
        elif cookie:
            user = sessions.user_for(db, cookie)
        else:
            raise Unauthorized("sign in first: `dockyard jupyter ID` prints a link that signs you in")
        db.expunge(user)
        return user


def _target(platform: Platform, user: User, key: str, port: int | None = None, what: str = "JupyterLab") -> Target:
    with platform.sessions.begin() as db:
        instance = instances.get_owned(db, user, key)  # another user's: 404
        if port is not None and not db.scalars(select(ServicePort).where(
                ServicePort.instance_id == instance.id, ServicePort.port == port)).first():
            raise NotFound(f"port {port} of instance {instance.name} is not exposed")
        if user.is_admin and instance.owner_id != user.id:
            _audit(db, instance, f"admin {user.name} opened {what}")
    return _running(platform, instance)


def _running(platform: Platform, instance: Instance) -> Target:
    if instance.status != Status.RUNNING or not instance.container_id:
        raise Conflict(f"instance {instance.name} is {instance.status}, not running")
    info = platform.runtime(instance.node_name).inspect(instance.container_id)
    if info is None or not info.ip:
        raise Conflict(f"instance {instance.name} has no network address yet")
    return Target(instance.id, info.ip, instance.jupyter_token)


_audited: dict[tuple[str, str], float] = {}


def _audit(db, instance: Instance, cause: str) -> None:
    if time.monotonic() - _audited.get((instance.id, cause), -3600.0) < 3600:
        return
    _audited[(instance.id, cause)] = time.monotonic()
    db.add(InstanceEvent(instance_id=instance.id, from_status=instance.status, to_status=instance.status, cause=cause))


_last_activity: dict[str, float] = {}


def _touch(platform: Platform, instance_id: str) -> None:
    """Record Jupyter activity, at most every ACTIVITY_EVERY_S per instance."""
    now = time.monotonic()
    if now - _last_activity.get(instance_id, -ACTIVITY_EVERY_S) < ACTIVITY_EVERY_S:
        return
    _last_activity[instance_id] = now
    with platform.sessions.begin() as db:
        db.get(Instance, instance_id).last_jupyter_at = utcnow()


def _client(request_or_ws) -> httpx.AsyncClient:
    return request_or_ws.app.state.proxy_client


# Who may go where, remembered briefly: proxied traffic (a notebook's many small
# requests) must not cost a database lookup and a `docker inspect` each. Any instance
# status change (platform.generation) forgets it all at once.
_CACHE_TTL_S = 5.0
_cache: dict[tuple, tuple[float, int, Target]] = {}


def _cached(platform: Platform, cache_key: tuple) -> Target | None:
    hit = _cache.get(cache_key)
    if hit and hit[1] == platform.generation and time.monotonic() - hit[0] < _CACHE_TTL_S:
        return hit[2]
    return None


def _resolve_now(platform: Platform, authorization: str | None, cookie: str | None, key: str,
                 port: int | None) -> Target:
    cache_key = (authorization, cookie, key, port)
    hit = _cached(platform, cache_key)
    if hit:
        return hit
    user = _caller(platform, authorization, cookie)
    target = _target(platform, user, key, port, "JupyterLab" if port is None else f"port {port}")
    if len(_cache) > 10_000:
        _cache.clear()
    _cache[cache_key] = (time.monotonic(), platform.generation, target)
    return target


async def _resolve(conn, key: str, port: int | None = None) -> Target:
    platform = conn.app.state.platform
    authorization, cookie = conn.headers.get("authorization"), conn.cookies.get(sessions.COOKIE)
    # Remembered: answer on the event loop, no thread hop.
    hit = _cached(platform, (authorization, cookie, key, port))
    return hit or await run_in_threadpool(_resolve_now, platform, authorization, cookie, key, port)


@router.get("/login/link")
def redeem(request: Request, token: str, next: str = "/"):
    """A one-time link from `dockyard jupyter`: sign this browser in, go on."""
    platform = request.app.state.platform
    if not next.startswith("/") or next.startswith("//"):
        next = "/"
    with platform.sessions.begin() as db:
        session = sessions.redeem_link(db, token)
    response = RedirectResponse(next, status_code=303)
    response.set_cookie(sessions.COOKIE, session, httponly=True, samesite="lax", max_age=7 * 86400,
                        secure=request.url.scheme == "https")
    return response


@router.api_route("/instances/{key}/jupyter/{path:path}", methods=METHODS)
async def jupyter(key: str, path: str, request: Request):
    target = await _resolve(request, key)
    if key != target.instance_id:  # by name: go to the id, the base URL JupyterLab knows
        return RedirectResponse(f"/instances/{target.instance_id}/jupyter/{path}", status_code=307)
    if time.monotonic() - _last_activity.get(target.instance_id, -ACTIVITY_EVERY_S) >= ACTIVITY_EVERY_S:
        await run_in_threadpool(_touch, request.app.state.platform, target.instance_id)
    url = f"http://{target.ip}:{JUPYTER_PORT}/instances/{target.instance_id}/jupyter/{path}"
    return await forward_http(_client(request), request, url, {PROXY_SECRET_HEADER: target.jupyter_token or ""})


@router.websocket("/instances/{key}/jupyter/{path:path}")
async def jupyter_ws(websocket: WebSocket, key: str, path: str):
    try:
        target = await _resolve(websocket, key)
    except DockyardError:
        await websocket.close(code=4404)
        return
    await run_in_threadpool(_touch, websocket.app.state.platform, target.instance_id)
    url = f"ws://{target.ip}:{JUPYTER_PORT}/instances/{target.instance_id}/jupyter/{path}"
    await forward_websocket(websocket, url, {PROXY_SECRET_HEADER: target.jupyter_token or ""})


@router.api_route("/instances/{key}/ports/{port}/{path:path}", methods=METHODS)
async def service_port(key: str, port: int, path: str, request: Request):
    target = await _resolve(request, key, port)
    return await forward_http(_client(request), request, f"http://{target.ip}:{port}/{path}", {})


@router.websocket("/instances/{key}/ports/{port}/{path:path}")
async def service_port_ws(websocket: WebSocket, key: str, port: int, path: str):
    try:
        target = await _resolve(websocket, key, port)
    except DockyardError:
        await websocket.close(code=4404)
        return
    await forward_websocket(websocket, f"ws://{target.ip}:{port}/{path}", {})


def _shared_target(platform: Platform, link: str) -> tuple[Target, int]:
    digest = hashlib.sha256(link.encode()).hexdigest()
    with platform.sessions.begin() as db:
        shared = db.scalars(select(ServicePort).where(ServicePort.share_hash == digest)).first()
        if shared is None:
            raise NotFound("this link does not exist or was revoked")
        instance, port = db.get(Instance, shared.instance_id), shared.port
    return _running(platform, instance), port


@router.api_route("/shared/{link}/{path:path}", methods=METHODS)
async def shared(link: str, path: str, request: Request):
    target, port = await run_in_threadpool(_shared_target, request.app.state.platform, link)
    return await forward_http(_client(request), request, f"http://{target.ip}:{port}/{path}", {})
