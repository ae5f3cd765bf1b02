"""The server's side of Idempotency-Key (core/idempotency.py says which requests): the
first request with a key is recorded before it runs and its answer after; a retry with
the same key gets that answer back, marked `Idempotent-Replayed: true`, and nothing is
done again. An ASGI middleware, so streaming answers elsewhere are left untouched."""

from __future__ import annotations

import hashlib

import anyio
from sqlalchemy import delete, select
from sqlalchemy.orm import Session
from starlette.datastructures import Headers
from starlette.responses import JSONResponse, Response

from dockyard.core import idempotency
from dockyard.core.errors import Unauthorized
from dockyard.db.models import IdempotentRequest, utcnow
from dockyard.db.session import insert_unique
from dockyard.services import users


class Idempotency:
    def __init__(self, app, prefix: str):
        self.app, self.prefix = app, prefix

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(self.prefix) or not idempotency.covers(
                scope["method"], path[len(self.prefix):]):
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        key = headers.get(idempotency.HEADER)
        if key is None:
            return await self.app(scope, receive, send)
        if not idempotency.KEY_FORMAT.fullmatch(key):
            answer = JSONResponse({"detail": f"{idempotency.HEADER} must be 1 to 255 visible ASCII characters",
                                   "field": idempotency.HEADER}, status_code=400)
            return await answer(scope, receive, send)
        platform = scope["app"].state.platform
        user_id = await anyio.to_thread.run_sync(_user_id, platform, headers.get("authorization", ""))
        if user_id is None:
            return await self.app(scope, receive, send)  # the endpoint answers 401

        body = await _whole_body(receive)
        fingerprint = hashlib.sha256(b"\n".join([path.encode(), scope.get("query_string", b""), body])).hexdigest()
        first = await anyio.to_thread.run_sync(_reserve, platform, user_id, key, fingerprint)
        if first is not None:
            return await _answer_retry(first, key, fingerprint)(scope, receive, send)

        start, chunks, recorded = {}, [], []

        async def recording_send(message):
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False) and start.get("status", 500) < 500:
                    # Kept before the answer's end goes out: a client that retries as soon as it
                    # has it must get it replayed, not "has not finished".
                    await anyio.to_thread.run_sync(_record, platform, user_id, key, start["status"],
                                                   Headers(raw=start.get("headers", [])).get("content-type"),
                                                   b"".join(chunks))
                    recorded.append(True)
            await send(message)

        async def replay_receive():
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            await self.app(scope, replay_receive, recording_send)
        except BaseException:
            await anyio.to_thread.run_sync(_forget, platform, user_id, key)
            raise
        if not recorded:  # a 5xx, or no answer: it may not have happened, a retry runs again
            await anyio.to_thread.run_sync(_forget, platform, user_id, key)


async def _whole_body(receive) -> bytes:
    parts, more = [], True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        parts.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(parts)


def _answer_retry(first: IdempotentRequest, key: str, fingerprint: str) -> Response:
    if first.fingerprint != fingerprint:
        return JSONResponse({"detail": f"{idempotency.HEADER} {key!r} was used for another request; "
                                       "send a new request with a new key", "field": idempotency.HEADER},
                            status_code=422)
    if first.status_code is None:
        return JSONResponse({"detail": f"the request with {idempotency.HEADER} {key!r} has not finished, or was "
                                       "cut short by a restart: look at its result (e.g. `dockyard ls`) before "
                                       "sending it again with a new key", "field": idempotency.HEADER},
                            status_code=409)
    return Response(first.body, status_code=first.status_code, media_type=first.content_type,
                    headers={"Idempotent-Replayed": "true"})


def _user_id(platform, authorization: str) -> int | None:
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    with platform.reads.begin() as db:  # a token check takes no write lock
        try:
            return users.user_for_token(db, token.strip()).id
        except Unauthorized:
            return None


def _reserve(platform, user_id: int, key: str, fingerprint: str) -> IdempotentRequest | None:
    """Record the key for this request (None), or return the first request that had it."""
    def first(db: Session) -> IdempotentRequest | None:
        found = db.scalars(select(IdempotentRequest).where(
            IdempotentRequest.user_id == user_id, IdempotentRequest.key == key)).one_or_none()
        if found is not None:
            db.expunge(found)
        return found

    with platform.sessions.begin() as db:
        db.execute(delete(IdempotentRequest).where(IdempotentRequest.created_at < utcnow() - idempotency.KEPT_FOR))
        found = first(db)
        if found is not None:
            return found
        # A concurrent first request may insert between the look and ours: then it is the first.
        if insert_unique(db, IdempotentRequest(user_id=user_id, key=key, fingerprint=fingerprint), None) is None:
            return first(db)
    return None


def _record(platform, user_id: int, key: str, status: int, content_type: str | None, body: bytes) -> None:
    with platform.sessions.begin() as db:
        first = db.scalars(select(IdempotentRequest).where(
            IdempotentRequest.user_id == user_id, IdempotentRequest.key == key)).one()
        first.status_code, first.content_type, first.body = status, content_type, body


def _forget(platform, user_id: int, key: str) -> None:
    with platform.sessions.begin() as db:
        db.execute(delete(IdempotentRequest).where(IdempotentRequest.user_id == user_id, IdempotentRequest.key == key))
