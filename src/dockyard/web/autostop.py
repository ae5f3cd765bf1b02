"""The console's side of the auto-stop policy: the choices of the create form and the
instance page, reading them from a form, the instance page's form to change it, and its
"keep running" button (shown on the banner of a warned stop)."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Depends
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from dockyard.core.autostop import OFF, parse_minutes
from dockyard.core.errors import Conflict, DockyardError, InvalidInput, NotFound
from dockyard.core.inputs import PatchInstance
from dockyard.db.models import Instance
from dockyard.services import autostop, instance_actions
from dockyard.web.pages import Page, check_csrf, form, not_found, owned_instance, page, templates

router = APIRouter(include_in_schema=False)


def rule_values(instance: Instance) -> dict:
    """The rules as the form shows them (a stop time in ISO 8601, with its zone)."""
    at = instance.auto_stop_at
    return {"auto_stop_gpu_idle_percent": instance.auto_stop_gpu_idle_percent,
            "auto_stop_at": at.isoformat(timespec="minutes") if at else None,
            "auto_stop_on_exit": bool(instance.auto_stop_on_exit), "auto_stop_when_exits": instance.auto_stop_when_exits}

CUSTOM = "custom"
# Form field -> policy field, and the minutes offered before "custom".
FIELDS = {"auto_stop_idle": "auto_stop_idle_minutes", "auto_stop_max": "auto_stop_max_minutes",
          "auto_stop_gpu_idle": "auto_stop_gpu_idle_minutes"}
CHOICES = {"auto_stop_idle": (15, 30, 60, 120), "auto_stop_max": (60, 240, 480, 1440),
           "auto_stop_gpu_idle": (15, 30, 60, 120)}


def duration(minutes: int | None, t) -> str:
    """'off', '45 min', '2 h', '1 h 30 min', in the page's language."""
    if minutes is None:
        return t("autostop.off")
    hours, rest = divmod(minutes, 60)
    parts = ([t("autostop.hours").format(n=hours)] if hours else []) + (
        [t("autostop.minutes").format(n=rest)] if rest else [])
    return " ".join(parts)


templates.env.globals.update(duration=duration, autostop_choices=CHOICES, autostop_custom=CUSTOM)


def form_policy(data: dict[str, str]) -> dict[str, int | None]:
    """The policy fields of a console form: each a choice (minutes or off), or 'custom'
    with a duration typed in (30, 45m, 3h: the CLI's rule)."""
    policy = {}
    for name, field in FIELDS.items():
        choice = data.get(name, OFF)
        text = data.get(f"{name}_custom", "") if choice == CUSTOM else choice
        if choice == CUSTOM and not text.strip():
            raise InvalidInput(f"{field}: type a duration (45m, 3h) or choose off", field=field)
        policy[field] = parse_minutes(text, field)
    return policy


def form_percent(data: dict[str, str]) -> int | None:
    """The GPU-idle threshold typed in (whole %, 0-100); empty: the default (5 %)."""
    text = data.get("auto_stop_gpu_idle_percent", "").strip().removesuffix("%").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) > 100:
        raise InvalidInput(f"auto_stop_gpu_idle_percent: {text!r} is not a whole number from 0 to 100",
                           field="auto_stop_gpu_idle_percent")
    return int(text)


def form_rules(data: dict[str, str], instance: Instance) -> dict:
    """The instance page's other rules (a stop time, the start command's or a process's
    exit), only those the form changed: a stop time or a process is checked when it is set
    (ahead, running), never again when it stays as it was."""
    current = rule_values(instance)
    given = {"auto_stop_gpu_idle_percent": form_percent(data),
             "auto_stop_at": data.get("auto_stop_at", "").strip() or None,
             "auto_stop_on_exit": data.get("auto_stop_on_exit") == "on",
             "auto_stop_when_exits": data.get("auto_stop_when_exits", "").strip() or None}
    return {field: value for field, value in given.items() if value != current[field]}


@router.post("/instances/{key}/autostop")
def change(key: str, data: dict = Depends(form), p: Page = Depends(page)) -> Response:
    check_csrf(p, data.get("csrf"))
    target = f"/instances/{quote(key)}"
    try:
        with p.platform.sessions.begin() as db:
            instance = owned_instance(db, p, key)  # one's own only: an admin's view of others' is 404 here
        changes = PatchInstance(**form_policy(data), **form_rules(data, instance))
        instance_actions.change(p.platform, p.user, instance.id, changes.model_dump(exclude_unset=True))
    except NotFound:
        return not_found(p)
    except (InvalidInput, Conflict) as exc:  # shown on the page, in its language, by the field at fault
        if not exc.field:
            return RedirectResponse(f"{target}#autostop", status_code=303)  # released meanwhile: the page says so
        return RedirectResponse(f"{target}?autostop_error={exc.field}#autostop", status_code=303)
    except ValidationError as exc:  # a stop time that is no time, a process name with spaces
        return RedirectResponse(f"{target}?autostop_error={exc.errors()[0]['loc'][0]}#autostop", status_code=303)
    except DockyardError:
        pass  # released meanwhile: the page says so
    return RedirectResponse(f"{target}#autostop", status_code=303)


@router.post("/instances/{key}/keep")
def keep(key: str, data: dict = Depends(form), p: Page = Depends(page)) -> Response:
    check_csrf(p, data.get("csrf"))
    try:
        with p.platform.sessions.begin() as db:
            instance_id = owned_instance(db, p, key).id
        autostop.keep(p.platform, p.user, instance_id)
    except NotFound:
        return not_found(p)
    except DockyardError:
        pass  # stopped or kept meanwhile: the page says so
    return RedirectResponse(f"/instances/{quote(key)}", status_code=303)
