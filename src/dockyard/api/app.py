"""The FastAPI application: routers, error shapes, body limit, background loops."""

from __future__ import annotations

import logging

import anyio
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError

from dockyard.api.idempotency import Idempotency
from dockyard.api.routers import access, auth, images, instances, keys, market
from dockyard.api.routers import billing as billing_router
from dockyard.api.routers import clusters as clusters_router
from dockyard.api.routers import metrics as metrics_router  # monitoring
from dockyard.api.routers import notifications as notifications_router
from dockyard.api.routers import audit as audit_router, operations as operations_router
from dockyard.api.routers import mirrors as mirrors_router
from dockyard.api.routers import volumes as volumes_router
from dockyard.background.workers import Workers
from dockyard.config import Settings, get_settings
from dockyard.core.errors import DockyardError
from dockyard.services.login_guard import LoginGuard
from dockyard.services import images as image_service
from dockyard.services.nodes import connect_nodes
from dockyard.services.platform import open_platform
from dockyard.web import console

log = logging.getLogger(__name__)
API_PREFIX = "/api/v1"


class BodyLimit:
    """Refuse request bodies over `limit` bytes with 413, counting what actually arrives
    (a missing or false Content-Length does not get past it)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared and declared.isdigit() and int(declared) > self.limit:
            return await _too_large(self.limit)(scope, receive, send)
        seen = 0

        async def counted_receive():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _BodyTooLarge
            return message

        try:
            await self.app(scope, counted_receive, send)
        except _BodyTooLarge:
            await _too_large(self.limit)(scope, receive, send)


# The console runs its own scripts only (none inline, none from elsewhere), is framed by
# itself only, and no answer of it is sniffed into another type. /docs (Swagger UI) loads
# its scripts from a CDN and inline: it gets the framing rule only.
CONSOLE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
               "connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'self'")
_DOCS_PATHS = ("/docs", "/redoc")


class SecurityHeaders:
    """Headers on every answer of the application (the console and the API)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        csp = "frame-ancestors 'self'" if scope["path"].startswith(_DOCS_PATHS) else CONSOLE_CSP
        added = [(b"content-security-policy", csp.encode()), (b"x-content-type-options", b"nosniff"),
                 (b"x-frame-options", b"SAMEORIGIN"), (b"referrer-policy", b"same-origin")]

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *added]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class _BodyTooLarge(Exception):
    pass


def _too_large(limit: int) -> JSONResponse:
    return JSONResponse({"detail": f"request body too large (limit {limit} bytes)"}, status_code=413)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"] if p not in ("body", "query", "path"))
        message = error["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Long-polls, log follows and build streams each hold a worker thread: allow many.
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.api_threads
        platform = open_platform(settings)
        image_service.load_catalog(platform)
        connect_nodes(platform)
        image_service.refresh_cache(platform)
        workers = Workers(platform)  # every background loop and pool, started and stopped together
        workers.start()
        app.state.platform, app.state.driver, app.state.metrics = platform, workers.driver, workers.metrics
        yield
        # Its bounded drain, off the event loop, on a thread of its own (not one the requests share).
        await anyio.to_thread.run_sync(workers.stop, limiter=anyio.CapacityLimiter(1))

    app = FastAPI(title="Dockyard", version="0.1.0", lifespan=lifespan, docs_url="/docs",
                  openapi_url=f"{API_PREFIX}/openapi.json")
    app.state.login_guard = LoginGuard(settings)  # the API's and the console's sign-ins alike

    @app.exception_handler(DockyardError)
    async def _dockyard_error(_request: Request, exc: DockyardError):
        body = {"detail": exc.message}
        if exc.field:
            body["field"] = exc.field
        body.update(getattr(exc, "details", {}))  # e.g. a refusal's free GPUs and ways out (core/queue.py)
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        return JSONResponse(body, status_code=exc.status_code, headers=headers)

    @app.exception_handler(OverflowError)
    @app.exception_handler(DataError)
    async def _out_of_range(_request: Request, _exc: Exception):
        # A number no column holds (SQLite: over 64 bits; PostgreSQL: over the column's type).
        return JSONResponse({"detail": "a number in the request is out of range"}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError):
        return JSONResponse({"detail": _validation_message(exc)}, status_code=422)

    for router in (auth.router, market.router, images.router, instances.router, keys.router, access.router,
                   billing_router.router, clusters_router.router,
                   notifications_router.router,
                   volumes_router.router):
        app.include_router(router, prefix=API_PREFIX)
    app.include_router(metrics_router.router, prefix=API_PREFIX)  # monitoring
    app.include_router(audit_router.router, prefix=API_PREFIX)  # the admins' audit log
    app.include_router(operations_router.router, prefix=API_PREFIX)  # progress of long operations
    app.include_router(mirrors_router.router, prefix=API_PREFIX)  # package mirrors for new instances

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict:
        return {"ok": True}

    console.install(app)  # the web console, at /

    app.add_middleware(Idempotency, prefix=API_PREFIX)  # inside BodyLimit: it reads bodies already counted
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(SecurityHeaders)
    app.openapi = lambda: _openapi_with_our_errors(app)
    return app


def _openapi_with_our_errors(app: FastAPI) -> dict:
    """The schema, with a 422's body as _invalid sends it (one readable message)."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        schemas = schema.get("components", {}).get("schemas", {})
        if "HTTPValidationError" in schemas:
            schemas["HTTPValidationError"] = {
                "title": "HTTPValidationError", "type": "object", "required": ["detail"],
                "properties": {"detail": {"type": "string", "title": "Detail"}}}
            schemas.pop("ValidationError", None)
        app.openapi_schema = schema
    return app.openapi_schema

