"""The console's own pages: sign in, the market, create, the instance list and page with
live status (Server-Sent Events), images, SSH keys and billing."""

from __future__ import annotations

import asyncio
import hmac
import json
import secrets
import time

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.responses import StreamingResponse
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from dockyard.core.addresses import client_address
from dockyard.core.billing import format_amount
from dockyard.core.errors import DockyardError, NotFound, TooManyRequests
from dockyard.core.gpus import driver_runs
from dockyard.core.inputs import CloneInstance, CreateInstance, KeyIn, SaveImage, StartInstance
from dockyard.core.placement import ANY_MODEL
from dockyard.core.sharing import MILLI
from dockyard.core.states import Status
from dockyard.core.validation import DEFAULT_DATA_DISK_GB
from dockyard.db.models import Image, Instance, Node, User, utcnow
from dockyard.services import images, instance_views, instances, keys, market, ports, sessions
from dockyard.services import instance_actions as actions
from dockyard.services.billing import prices, statements
from dockyard.services.held import held
from dockyard.web import i18n
from dockyard.web.autostop import form_percent, form_policy
from dockyard.web.pages import (STATIC, Page, check_csrf, form, form_error, not_found, optional_page, owned_instance,
                                page, render)
from dockyard.web.live import InstanceWatch, instance_rows
from dockyard.web.volumes import free_volumes

router = APIRouter(include_in_schema=False)
LOGIN_CSRF_COOKIE = "dockyard_login_csrf"
SSE_POLL_S = 0.3
SSE_PING_S = 15.0


# ---- static files, language, sign in -----------------------------------------------------------


@router.get("/static/{name}")
def static(name: str) -> Response:
    path = STATIC / name
    if "/" in name or name.startswith(".") or not path.is_file():
        return PlainTextResponse("not found", status_code=404)
    return FileResponse(path, headers={"Cache-Control": "public, max-age=300"})


@router.get("/lang/{code}")
def set_language(code: str, next: str = "/") -> Response:
    if not next.startswith("/") or next.startswith("//"):
        next = "/"
    response = RedirectResponse(next, status_code=303)
    if code in i18n.LANGUAGES:
        response.set_cookie(i18n.LANG_COOKIE, code, max_age=365 * 86400, samesite="lax")
    return response


@router.get("/")
def home(p: Page = Depends(optional_page)) -> Response:
    return RedirectResponse("/instances" if p.user else "/login", status_code=303)


def _login_page(p: Page, next: str, error: str | None = None, status_code: int = 200, name: str = "") -> HTMLResponse:
    login_csrf = p.request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(24)
    response = render(p, "login.html", status_code=status_code, next=next, error=error, login_csrf=login_csrf,
                      name=name)
    response.set_cookie(LOGIN_CSRF_COOKIE, login_csrf, httponly=True, samesite="strict", max_age=3600,
                        secure=p.request.url.scheme == "https")
    return response


def _safe_next(next: str | None) -> str:
    return next if next and next.startswith("/") and not next.startswith("//") else "/instances"


@router.get("/login")
def login_form(next: str = "/instances", p: Page = Depends(optional_page)) -> Response:
    if p.user:
        return RedirectResponse(_safe_next(next), status_code=303)
    return _login_page(p, _safe_next(next))


@router.post("/login")
def login(data: dict = Depends(form), p: Page = Depends(optional_page)) -> Response:
    name, password = data.get("user", "")[:64], data.get("password", "")[:1024]
    next = _safe_next(data.get("next"))
    cookie = p.request.cookies.get(LOGIN_CSRF_COOKIE)
    if not cookie or not hmac.compare_digest(cookie, data.get("csrf", "")):
        return _login_page(p, next, "CSRF", status_code=403, name=name)
    guard = p.request.app.state.login_guard  # the API's limits too
    try:
        with p.platform.reads.begin() as db:  # the slow hash holds no write lock
            user = guard.check(db, name, password, client_address(p.request))
            db.expunge(user)
        with p.platform.sessions.begin() as db:
            token = sessions.start(db, user)
    except TooManyRequests:
        return _login_page(p, next, p.t("signin.limited"), status_code=429, name=name)
    except DockyardError:
        return _login_page(p, next, p.t("signin.wrong"), status_code=401, name=name)
    response = RedirectResponse(next, status_code=303)
    response.set_cookie(sessions.COOKIE, token, httponly=True, samesite="lax",
                        max_age=int(sessions.SESSION_LIFETIME.total_seconds()),
                        secure=p.request.url.scheme == "https")
    response.delete_cookie(LOGIN_CSRF_COOKIE)
    return response


@router.post("/logout")
def logout(data: dict = Depends(form), p: Page = Depends(page)) -> Response:
    check_csrf(p, data.get("csrf"))
    with p.platform.sessions.begin() as db:
        sessions.end(db, p.token)
    p.platform.access_revoked()  # the proxied paths forget this session at once
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(sessions.COOKIE)
    return response


# ---- market and create ----------------------------------------------------------------------------


def market_rows(db: Session) -> list[dict]:
    """The market, with each row's price per GPU-hour from the price book."""
    rows, now = prices.price_rows(db), prices.to_us(utcnow())
    out = []
    for r in market.offer_rows(db):
        price = prices.hourly_price(rows, r["model"], MILLI, r["node"], False, now)
        row = {**r, "price": format_amount(price), "price_minor": price}
        for share in row["shares"]:  # priced by share: the GPU's price times its part
            share["price_minor"] = prices.hourly_price(rows, r["model"], round(share["gpu_fraction"] * MILLI),
                                                        r["node"], False, now)
            share["price"] = format_amount(share["price_minor"])
        out.append(row)
    return out


@router.get("/market")
def market_page(p: Page = Depends(page)) -> HTMLResponse:
    with p.platform.reads.begin() as db:
        rows = market_rows(db)
    return render(p, "market.html", rows=rows)


def _image_label(image: Image) -> str:
    parts = [image.name]
    if image.framework:
        parts.append(f"{image.framework} {image.framework_version or ''}".strip())
    if image.python:
        parts.append(f"Python {image.python}")
    parts.append(f"CUDA {image.cuda}" if image.cuda and image.cuda != "none" else "CPU")
    return " · ".join(parts)


def create_context(db: Session, user: User) -> dict:
    nodes = {n.name: n for n in db.scalars(select(Node))}
    rows = market_rows(db)
    price_rows, now = prices.price_rows(db), prices.to_us(utcnow())
    no_gpu_price = {name: prices.hourly_price(price_rows, "", 0, name, True, now) for name in nodes}
    picker = []
    for image in images.list_images(db, user):
        if image.status != "ready":
            continue
        holding = [n for n in images.nodes_holding(db, image.id) if n in nodes and nodes[n].online]
        picker.append({
            "name": image.name, "label": _image_label(image), "default": image.is_default,
            "nodes": holding,  # any of these runs it without GPUs
            "gpu_nodes": [n for n in holding if driver_runs(nodes[n].driver_version, image.min_driver)],
        })
    return {"market": rows, "images": picker, "no_gpu_price": no_gpu_price,
            "models": sorted({r["model"] for r in rows}),
            "shares": sorted({s["share"] for r in rows for s in r["shares"]}),
            "keys": [k.name for k in keys.list_keys(db, user)],  # all of them go into every instance
            "volumes": free_volumes(db, user)}


@router.get("/create")
def create_form(model: str | None = None, p: Page = Depends(page)) -> HTMLResponse:
    with p.platform.reads.begin() as db:
        context = create_context(db, p.user)
    return render(p, "create.html", chosen={"gpu_model": model, "gpu_count": 1, "data_disk_gb": DEFAULT_DATA_DISK_GB}, error=None,
                  **context)


@router.post("/create")
def create(data: dict = Depends(form), p: Page = Depends(page)) -> Response:
    check_csrf(p, data.get("csrf"))
    chosen = {"gpu_model": data.get("gpu_model") or ANY_MODEL, "image": data.get("image", ""),
              "name": data.get("name") or None, "queue": data.get("queue") == "on"}
    try:
        chosen["gpu_count"] = int(data.get("gpu_count", "1"))
        chosen["gpu_share"] = (data.get("gpu_share") or "").strip() or None
        chosen["data_disk_gb"] = int(data.get("data_disk_gb", DEFAULT_DATA_DISK_GB))
        if data.get("volume"):
            chosen["volumes"] = [data["volume"]]
        chosen.update(form_policy(data))
        chosen["auto_stop_gpu_idle_percent"] = form_percent(data)
        chosen["auto_stop_at"] = data.get("auto_stop_at", "").strip() or None
        chosen["auto_stop_on_exit"] = data.get("auto_stop_on_exit") == "on"
        # Secret values go to the create only: never back into the form.
        body = CreateInstance(**chosen, secret_env=parse_env_lines(data.get("secret_env", "")))
        created = actions.create(p.platform, p.request.app.state.driver, p.user, body.model_dump(),
                                 body.model_fields_set)
    except (DockyardError, ValidationError, ValueError) as exc:
        message = form_error(exc)
        with p.platform.sessions.begin() as db:
            context = create_context(db, p.user)
        chosen["volume"] = data.get("volume")
        return render(p, "create.html", status_code=400, chosen=chosen, error=message, **context)
    return RedirectResponse(f"/instances?created={created.id}", status_code=303)


def parse_env_lines(text: str) -> dict[str, str]:
    """NAME=VALUE lines (blank ones skipped) as a dict; a line without "=" is a ValueError."""
    env = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        name, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"secret environment, line {number}: write NAME=VALUE")
        env[name.strip()] = value.rstrip("\r")
    return env


# ---- instances ------------------------------------------------------------------------------------


@router.get("/instances")
def instances_page(created: str | None = None, p: Page = Depends(page)) -> HTMLResponse:
    with p.platform.reads.begin() as db:
        rows = instance_rows(p.platform, db, p.user)
    return render(p, "instances.html", rows=rows, created=created)


@router.get("/instances/{key}")
def instance_page(key: str, p: Page = Depends(page)) -> HTMLResponse:
    return _instance_page(key, p)


def _instance_page(key: str, p: Page, port_error: str | None = None) -> HTMLResponse:
    """The detail page; with the message of a refused port form (never from the URL)."""
    platform = p.platform
    try:
        with platform.reads.begin() as db:
            instance_id = owned_instance(db, p, key).id
    except NotFound:
        return not_found(p)  # after the transaction: rendering reads the database too
    with platform.reads.begin() as db:
        instance = db.get(Instance, instance_id)
        row = instance_rows(platform, db, p.user, {instance.id})
        row = row[0] if row else None
        events = instances.events(db, instance.id)
        port_rows = ports.listed(db, instance)
        env_check = instance.env_check
        now, node = held(instance), instance.node_name
        released = instance.status == Status.RELEASED
    logs = None
    if now.container_id and not released:
        try:
            logs = b"".join(platform.instances(node).logs(now, tail=100, follow=False,
                                                          max_bytes=256 * 1024)).decode(errors="replace")
        except Exception as exc:  # the container may be gone between the read and here
            logs = f"({type(exc).__name__}: {exc})"
    return render(p, "instance.html", status_code=400 if port_error else 200, i=row, instance_id=instance.id,
                  events=events, ports=port_rows, port_error=port_error,
                  env_check=json.dumps(env_check, indent=2, ensure_ascii=False) if env_check else None, logs=logs)


@router.post("/instances/{key}/ports")
def add_port(key: str, data: dict = Depends(form), p: Page = Depends(page)) -> Response:
    check_csrf(p, data.get("csrf"))
    try:
        with p.platform.sessions.begin() as db:
            instance = owned_instance(db, p, key)
            ports.expose(db, instance, int(data.get("port", "0")), keep_path=data.get("keep_path") == "1")
    except NotFound:
        return not_found(p)
    except (DockyardError, ValueError) as exc:  # the reason goes next to the form
        return _instance_page(key, p, port_error=exc.message if isinstance(exc, DockyardError)
                             else f"port: {data.get('port', '')!r} is not a number")
    return RedirectResponse(f"/instances/{key}", status_code=303)


ACTIONS = ("stop", "start", "start-no-gpu", "start-queue", "release", "save", "check", "clone", "migrate")


@router.post("/console/instances/{key}/{action}")
async def instance_action(key: str, action: str, request: Request, p: Page = Depends(page)) -> JSONResponse:
    check_csrf(p, request.headers.get("x-csrf-token"))
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        body = {}
    return await run_in_threadpool(_act, p, key, action, body if isinstance(body, dict) else {})


def _act(p: Page, key: str, action: str, body: dict) -> JSONResponse:
    if action not in ACTIONS:
        return JSONResponse({"detail": f"unknown action {action!r}"}, status_code=404)
    platform, driver, user = p.platform, p.request.app.state.driver, p.user
    try:
        with platform.sessions.begin() as db:
            instance_id = owned_instance(db, p, key).id
        if action == "stop":
            instance = actions.stop(platform, driver, user, instance_id)
        elif action in ("start", "start-no-gpu", "start-queue"):
            options = StartInstance(no_gpu=action == "start-no-gpu", queue=action == "start-queue")
            instance = actions.start(platform, driver, user, instance_id, **options.model_dump())
        elif action == "release":  # the console's release keeps the data disk as a volume (the default)
            instance = actions.release(platform, driver, user, instance_id)
        elif action == "migrate":  # docs/migrate.md: to the node named, else the best fit; then it starts there
            node = body.get("node")
            options = StartInstance(migrate=True, node=str(node) if node else None)
            instance = actions.start(platform, driver, user, instance_id, **options.model_dump())
        elif action == "save":
            image = actions.save(platform, driver, user, instance_id, SaveImage(name=str(body.get("name", ""))).name)
            return JSONResponse({"image": image.name, "status": image.status})
        elif action == "clone":
            options = CloneInstance(**{k: body[k] for k in ("name", "gpu_count") if k in body})
            instance, op = actions.clone(platform, driver, user, instance_id, options.name, options.gpu_count)
            return JSONResponse({"id": instance.id, "name": instance.name, "operation": op.id,
                                 "ssh_password": instance.ssh_password})
        else:
            view = instance_views.view_of(platform, actions.check(platform, driver, user, instance_id).id, user)
            return JSONResponse({"status": view.status, "env_check": view.env_check})
        view = instance_views.view_of(platform, instance.id, user)
    except DockyardError as exc:  # with a refusal's free GPUs and ways out (core/queue.py)
        return JSONResponse({"detail": exc.message, **getattr(exc, "details", {})}, status_code=exc.status_code)
    except ValidationError as exc:
        return JSONResponse({"detail": form_error(exc)}, status_code=400)
    return JSONResponse({"id": view.id, "status": view.status, "queue_position": view.queue_position})


# ---- live status ---------------------------------------------------------------------------------


@router.get("/events")
async def events(request: Request, p: Page = Depends(page)) -> StreamingResponse:
    """Server-Sent Events: `instance` with a row whenever one of your instances changes,
    `gone` when one is released, `notices` with the unread count after a change,
    `operation` for long operations' progress. Polls the platform's generation counter
    (in memory) every 0.3 s and reads the database only after a change."""
    watch = await run_in_threadpool(InstanceWatch, p.platform, p.user)

    async def stream():
        last_sent = time.monotonic()
        yield "retry: 2000\n\n"
        while not await request.is_disconnected():
            messages = watch.operations()
            if watch.stale():
                messages += await run_in_threadpool(watch.changes)
            for message in messages:
                yield message
            if messages:
                last_sent = time.monotonic()
            elif time.monotonic() - last_sent > SSE_PING_S:
                last_sent = time.monotonic()
                yield ": ping\n\n"
            await asyncio.sleep(SSE_POLL_S)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


# ---- images, keys, billing -----------------------------------------------------------------------


@router.get("/images")
def images_page(p: Page = Depends(page)) -> HTMLResponse:
    with p.platform.reads.begin() as db:
        found = images.list_images(db, p.user)
        rows = [{"name": i.name, "kind": i.kind, "status": i.status, "framework": i.framework,
                 "framework_version": i.framework_version, "python": i.python, "cuda": i.cuda,
                 "min_driver": i.min_driver, "size": i.size_bytes, "description": i.description,
                 "mine": i.owner_id == p.user.id and i.kind == "saved", "created_at": i.created_at.isoformat()}
                for i in found]
    return render(p, "images.html", catalog=[r for r in rows if not r["mine"]], mine=[r for r in rows if r["mine"]])


@router.get("/keys")
def keys_page(p: Page = Depends(page), error: str | None = None) -> HTMLResponse:
    with p.platform.reads.begin() as db:
        rows = [{"name": k.name, "key_type": k.key_type, "bits": k.bits, "fingerprint": k.fingerprint,
                 "created_at": k.created_at.isoformat()} for k in keys.list_keys(db, p.user)]
    return render(p, "keys.html", rows=rows, error=error)


@router.post("/keys")
def add_key(data: dict = Depends(form), p: Page = Depends(page)) -> Response:
    check_csrf(p, data.get("csrf"))
    try:
        with p.platform.sessions.begin() as db:
            key = KeyIn(name=data.get("name", ""), public_key=data.get("public_key", "").strip())
            keys.add_key(db, p.user, key.name, key.public_key)
    except (DockyardError, ValidationError) as exc:
        return keys_page(p, error=form_error(exc))
    return RedirectResponse("/keys", status_code=303)


@router.post("/keys/{name}/remove")
def remove_key(name: str, data: dict = Depends(form), p: Page = Depends(page)) -> Response:
    check_csrf(p, data.get("csrf"))
    try:
        with p.platform.sessions.begin() as db:
            keys.remove_key(db, p.user, name)
    except DockyardError as exc:  # another user's key, or none: 404 with the reason
        refused = keys_page(p, error=exc.message)
        refused.status_code = exc.status_code
        return refused
    return RedirectResponse("/keys", status_code=303)


@router.get("/billing")
def billing_page(month: str | None = None, p: Page = Depends(page)) -> HTMLResponse:
    settings = p.platform.settings
    try:
        with p.platform.sessions.begin() as db:
            view = statements.balance_view(db, settings, p.user)
            statement = statements.statement(db, settings, p.user, month)
    except DockyardError:
        return not_found(p)  # after the transaction: rendering reads the database too
    return render(p, "billing.html", view=view, statement=statement)


@router.get("/billing/statement.csv")
def billing_csv(month: str | None = None, p: Page = Depends(page)) -> Response:
    with p.platform.sessions.begin() as db:
        data = statements.statement(db, p.platform.settings, p.user, month)
    response = PlainTextResponse(statements.statement_csv(data), media_type="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="dockyard-{month or "statement"}.csv"'
    return response


