"""Who may pass through the access paths, and where to: the instance's address for
/instances/<id>/jupyter/, /instances/<id>/ports/<port>/ and /shared/<link>/ on the
instance's own host, and the tickets that open that host to a signed-in browser."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import select

from dockyard.core import scopes
from dockyard.core.errors import Conflict, Forbidden, NotFound, Unauthorized
from dockyard.core.limits import BoundedDict
from dockyard.core.states import Status
from dockyard.db.models import Instance, InstanceEvent, ServicePort, User, utcnow
from dockyard.services import audit, instances, ports, sessions, users
from dockyard.services.held import held
from dockyard.services.platform import Platform

JUPYTER_PORT = 8888
# JupyterLab in our images trusts requests that carry the instance's secret here
# (images/pytorch-cuda/dockyard_jupyter_auth.py), so it keeps no token to leak.
PROXY_SECRET_HEADER = "X-Dockyard-Proxy-Secret"
ACTIVITY_EVERY_S = 30


@dataclass(frozen=True)
class Target:
    instance_id: str
    ip: str
    port: int
    jupyter_token: str | None
    keep_path: bool = False  # a service port whose app wants its base path (ServicePort.keep_path)


def _bearer(authorization: str | None) -> str | None:
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return None


def _caller(platform: Platform, authorization: str | None, cookie: str | None, host_id: str | None) -> User:
    """Who asks: by API token (one whose scope opens instances), or by the browser's cookie
    (on an instance's host, a session of that host; elsewhere, a console session)."""
    with platform.reads.begin() as db:
        if _bearer(authorization):
            token = users.token_for(db, _bearer(authorization))
            if not scopes.opens_instances(token.scope):
                raise Forbidden(f"this token's scope ({token.scope}) does not open instances")
            user = db.get(User, token.user_id)
        elif cookie and host_id:
            user = sessions.user_for_instance(db, cookie, host_id)
        elif cookie:
            user = sessions.user_for(db, cookie)
        else:
            raise Unauthorized("sign in first: open it from the console, or `dockyard jupyter ID` prints a link")
        db.expunge(user)
        return user


def _owned(db, user: User, key: str, port: int | None) -> tuple[Instance, ServicePort | None]:
    """The caller's instance `key` (another user's: 404) and its exposed `port`'s row."""
    instance = instances.get_owned(db, user, key)
    row = None
    if port is not None:
        row = db.scalars(select(ServicePort).where(ServicePort.instance_id == instance.id,
                                                   ServicePort.port == port)).first()
        if row is None:
            raise NotFound(f"port {port} of instance {instance.name} is not exposed")
    return instance, row


def _owned_target(platform: Platform, user: User, host_id: str, key: str, port: int | None) -> Target:
    with platform.sessions.begin() as db:
        instance, row = _owned(db, user, key, port)
        if instance.id != host_id:  # this host serves its own instance only
            raise NotFound(f"instance {key} not found")
        if user.is_admin and instance.owner_id != user.id:
            _audit(db, instance, user, "JupyterLab" if port is None else f"port {port}")
    return _running(platform, instance, port or JUPYTER_PORT, keep_path=bool(row and row.keep_path))


def _running(platform: Platform, instance: Instance, port: int, keep_path: bool = False) -> Target:
    if instance.status != Status.RUNNING or not instance.container_id:
        raise Conflict(f"instance {instance.name} is {instance.status}, not running")
    info = platform.instances(instance.node_name).observe(held(instance))
    if info is None or not info.ip:
        raise Conflict(f"instance {instance.name} has no network address yet")
    return Target(instance.id, info.ip, port, instance.jupyter_token, keep_path)


_audited: BoundedDict = BoundedDict(10_000)


def _audit(db, instance: Instance, admin: User, what: str) -> None:
    """An admin opened another user's instance: an instance event and an audit entry
    (once an hour per instance and door, not per proxied request)."""
    cause = f"admin {admin.name} opened {what}"
    if time.monotonic() - _audited.get((instance.id, cause), -3600.0) < 3600:
        return
    _audited[(instance.id, cause)] = time.monotonic()
    db.add(InstanceEvent(instance_id=instance.id, from_status=instance.status, to_status=instance.status, cause=cause))
    audit.on_instance(db, admin, instance, "open", f"opened {what}")


_last_activity: dict[str, float] = {}


def activity_due(instance_id: str) -> bool:
    return time.monotonic() - _last_activity.get(instance_id, -ACTIVITY_EVERY_S) >= ACTIVITY_EVERY_S


def touch(platform: Platform, instance_id: str) -> None:
    """Record Jupyter activity, at most every ACTIVITY_EVERY_S per instance."""
    if not activity_due(instance_id):
        return
    _last_activity[instance_id] = time.monotonic()
    with platform.sessions.begin() as db:
        instance = db.get(Instance, instance_id)
        if instance is not None:
            instance.last_jupyter_at = utcnow()


# Who may go where, remembered briefly: proxied traffic (a notebook's many small
# requests) must not cost a database lookup and a `docker inspect` each. Any instance
# status change or revoked access (the platform's generations) forgets it all at once.
_CACHE_TTL_S = 5.0
_cache: dict[tuple, tuple[float, tuple[int, int], Target]] = {}


def cached(platform: Platform, cache_key: tuple) -> Target | None:
    hit = _cache.get(cache_key)
    if hit and hit[1] == _generations(platform) and time.monotonic() - hit[0] < _CACHE_TTL_S:
        return hit[2]
    return None


def _generations(platform: Platform) -> tuple[int, int]:
    return platform.generation, platform.access_generation


def _remember(cache_key: tuple, generations: tuple[int, int], target: Target) -> Target:
    """`generations` as read before the look-up: a change committed meanwhile is not hidden."""
    if len(_cache) > 10_000:
        _cache.clear()
    _cache[cache_key] = (time.monotonic(), generations, target)
    return target


def owned(platform: Platform, authorization: str | None, cookie: str | None, host_id: str, key: str,
          port: int | None) -> Target:
    """On instance `host_id`'s host, the caller's instance `key` (JupyterLab, or an exposed
    port): 401, 404 or 409 if not."""
    cache_key = (authorization, cookie, host_id, key, port)
    hit = cached(platform, cache_key)
    if hit:
        return hit
    generations = _generations(platform)
    user = _caller(platform, authorization, cookie, host_id)
    return _remember(cache_key, generations, _owned_target(platform, user, host_id, key, port))


def ticket(platform: Platform, authorization: str | None, cookie: str | None, key: str,
           port: int | None) -> tuple[str, str | None]:
    """On the console's host: the id of the caller's instance `key` (401, 404 if not theirs
    or the port is not exposed) and, for a signed-in browser, a one-time ticket to its host."""
    user = _caller(platform, authorization, cookie, None)
    with platform.sessions.begin() as db:
        instance, _ = _owned(db, user, key, port)
        by_browser = cookie is not None and not _bearer(authorization)
        return instance.id, sessions.mint_ticket(db, user, instance.id, cookie) if by_browser else None


def open_session(platform: Platform, ticket: str, host_id: str) -> str:
    """A ticket, spent, for a session of instance `host_id`'s host (the cookie's value)."""
    with platform.sessions.begin() as db:
        return sessions.redeem_ticket(db, ticket, host_id)


def signed_in(platform: Platform, cookie: str, host_id: str) -> bool:
    """Whether `cookie` is a live session of instance `host_id`'s host."""
    try:
        _caller(platform, None, cookie, host_id)
    except Unauthorized:
        return False
    return True


def shared_instance(platform: Platform, link: str) -> str:
    """The id of the instance behind a share link (its host serves the link)."""
    with platform.reads.begin() as db:
        return ports.shared_port(db, link).instance_id


def shared(platform: Platform, link: str) -> Target:
    """The port behind a share link, for anyone who has the link."""
    cache_key = ("shared", link)
    hit = cached(platform, cache_key)
    if hit:
        return hit
    generations = _generations(platform)
    with platform.reads.begin() as db:
        row = ports.shared_port(db, link)
        instance, port, keep_path = db.get(Instance, row.instance_id), row.port, row.keep_path
    try:
        target = _running(platform, instance, port, keep_path)
    except Conflict:  # a visitor learns nothing of the instance (not its name, not its status)
        raise Conflict("the shared service is not available now; try again later") from None
    return _remember(cache_key, generations, target)
