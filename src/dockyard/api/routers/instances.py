import codecs
import json
from typing import AsyncGenerator

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from dockyard.api.streams import pumped
from dockyard.api.deps import current_user, get_db, get_driver, get_platform
from dockyard.api.schemas import (
    CloneOut,
    EventOut,
    ExecOut,
    ExecRequest,
    ImageOut,
    InstanceOut,
    MigrateInstance,
    MigrateOut,
    OperationOut,
)
from dockyard.core.errors import Conflict
from dockyard.core.inputs import CloneInstance, CreateInstance, PatchInstance, SaveImage, StartInstance
from dockyard.core.states import Status
from dockyard.core.validation import NAME_PATTERN
from dockyard.db.models import Instance, User
from dockyard.runtimes.base import ExecStream, RuntimeError_
from dockyard.runtimes.instances import Held
from dockyard.background.driver import Driver
from dockyard.services import autostop, fair_share, instance_views, instances
from dockyard.services import instance_actions as actions
from dockyard.services.platform import Platform

router = APIRouter(prefix="/instances", tags=["instances"])


def instance_out(view: instance_views.InstanceView) -> InstanceOut:
    return InstanceOut.model_validate(view, from_attributes=True)


def _out(platform: Platform, instance: Instance, user: User, ssh_password: str | None = None) -> InstanceOut:
    """The instance as it is after an action; a new SSH password is shown this once."""
    out = instance_out(instance_views.view_of(platform, instance.id, user))
    out.ssh_password = ssh_password
    return out


@router.post("", response_model=InstanceOut, status_code=201)
def create(body: CreateInstance, user: User = Depends(current_user), platform: Platform = Depends(get_platform),
           driver: Driver = Depends(get_driver)) -> InstanceOut:
    instance = actions.create(platform, driver, user, body.model_dump(), body.model_fields_set)
    return _out(platform, instance, user, instance.ssh_password)


@router.get("", response_model=list[InstanceOut])
def list_all(
    all: bool = Query(False, description="include released instances"),
    user: User = Depends(current_user),
    platform: Platform = Depends(get_platform),
    db: Session = Depends(get_db),
) -> list[InstanceOut]:
    found = instances.list_instances(db, user, include_released=all)
    return [instance_out(v) for v in instance_views.views(platform, db, found, user)]


@router.get("/{key}", response_model=InstanceOut)
def show(
    key: str,
    wait_for: list[Status] = Query(default=[], description="block until the status is one of these"),
    timeout: float = Query(60, ge=0, le=600),
    user: User = Depends(current_user),
    platform: Platform = Depends(get_platform),
) -> InstanceOut:
    if not wait_for:
        return instance_out(instance_views.owned_view(platform, user, key))
    with platform.fair_share.place(user, fair_share.WAIT):
        return instance_out(instance_views.wait_view(platform, user, key, {s.value for s in wait_for}, timeout))


@router.patch("/{key}", response_model=InstanceOut)
def patch(key: str, body: PatchInstance, user: User = Depends(current_user),
          platform: Platform = Depends(get_platform)) -> InstanceOut:
    """Change the auto-stop policy or what a release does: only the fields given; null
    turns a rule off (or to the operator's limit)."""
    return _out(platform, actions.change(platform, user, key, body.model_dump(exclude_unset=True)), user)


@router.post("/{key}/keep", response_model=InstanceOut)
def keep(key: str, user: User = Depends(current_user), platform: Platform = Depends(get_platform)) -> InstanceOut:
    """Keep running: call off a warned auto-stop; the timers count from now (409 if none is pending)."""
    return _out(platform, autostop.keep(platform, user, key), user)


@router.get("/{key}/events", response_model=list[EventOut])
def events(key: str, user: User = Depends(current_user), db: Session = Depends(get_db)) -> list[EventOut]:
    instance = instances.get_owned(db, user, key)
    return [EventOut.model_validate(e, from_attributes=True) for e in instances.events(db, instance.id)]


@router.post("/{key}/stop", response_model=InstanceOut)
def stop(key: str, user: User = Depends(current_user), platform: Platform = Depends(get_platform),
         driver: Driver = Depends(get_driver)) -> InstanceOut:
    return _out(platform, actions.stop(platform, driver, user, key), user)


@router.post("/{key}/start", response_model=InstanceOut)
def start(key: str, body: StartInstance | None = None, user: User = Depends(current_user),
          platform: Platform = Depends(get_platform), driver: Driver = Depends(get_driver)) -> InstanceOut:
    """With migrate: its progress is an operation (GET /operations, docs/migrate.md)."""
    return _out(platform, actions.start(platform, driver, user, key, **(body or StartInstance()).model_dump()), user)


@router.post("/{key}/migrate", response_model=MigrateOut, status_code=202)
def migrate(key: str, body: MigrateInstance, user: User = Depends(current_user),
            platform: Platform = Depends(get_platform), driver: Driver = Depends(get_driver)) -> MigrateOut:
    """Move a stopped (or failed) instance to another node: its disks are copied there and
    checked, then it starts there. The operation reports the copy (GET /operations/ID)."""
    instance, op = actions.migrate(platform, driver, user, key, body.node)
    return MigrateOut(instance=_out(platform, instance, user), operation=OperationOut(**op.view()))


@router.delete("/{key}", response_model=InstanceOut)
def release(key: str, keep_data: str | None = Query(None, pattern=NAME_PATTERN,
                                                    description="keep the data disk as the volume of this name"),
            delete_data: bool = Query(False, description="delete the data disk instead of keeping it as a volume"),
            user: User = Depends(current_user), platform: Platform = Depends(get_platform),
            driver: Driver = Depends(get_driver)) -> InstanceOut:
    return _out(platform, actions.release(platform, driver, user, key, keep_data, delete_data), user)


@router.post("/{key}/save", response_model=ImageOut, status_code=202)
def save(key: str, body: SaveImage, user: User = Depends(current_user), platform: Platform = Depends(get_platform),
         driver: Driver = Depends(get_driver)) -> ImageOut:
    """Save the system disk (never the data disk) as a private image; poll the image."""
    return ImageOut.model_validate(actions.save(platform, driver, user, key, body.name), from_attributes=True)


@router.post("/{key}/clone", response_model=CloneOut, status_code=202)
def clone(key: str, body: CloneInstance, user: User = Depends(current_user),
          platform: Platform = Depends(get_platform), driver: Driver = Depends(get_driver)) -> CloneOut:
    """A new instance over copies of this one's system and data disks, on its node. The
    operation reports the copy (GET /operations/ID); the instance then starts as usual."""
    instance, op = actions.clone(platform, driver, user, key, body.name, body.gpu_count)
    out = _out(platform, instance, user, instance.ssh_password)  # a new one, shown once, as at create
    return CloneOut(instance=out, operation=OperationOut(**op.view()))


@router.post("/{key}/check", response_model=InstanceOut)
def check(key: str, user: User = Depends(current_user), platform: Platform = Depends(get_platform),
          driver: Driver = Depends(get_driver)) -> InstanceOut:
    """Run the environment self-test (dockyard-check) in the instance now."""
    return _out(platform, actions.check(platform, driver, user, key), user)


@router.get("/{key}/logs")
def logs(
    key: str,
    tail: int = Query(200, ge=1, le=100_000),
    follow: bool = False,
    user: User = Depends(current_user),
    platform: Platform = Depends(get_platform),
) -> StreamingResponse:
    instance, now = actions.running_container(platform, user, key)
    if not follow:
        return StreamingResponse(pumped(_logs(platform, instance, now, tail, False)), media_type="text/plain")
    with platform.fair_share.place(user, fair_share.LOGS) as place:  # a follow holds a worker: one of the user's few
        chunks = _logs(platform, instance, now, tail, True)
        return StreamingResponse(place.kept(pumped(chunks)), media_type="text/plain")


def _logs(platform: Platform, instance: Instance, now: Held, tail: int, follow: bool):
    try:
        return platform.instances(instance.node_name).logs(now, tail=tail, follow=follow,
                                                           max_bytes=platform.settings.logs_max_bytes)
    except RuntimeError_ as exc:
        raise Conflict(str(exc)) from None


# Output kept for one answer at the end; a stream may be as long as the server allows.
EXEC_ANSWER_MAX_BYTES = 1024 * 1024


@router.post("/{key}/exec", response_model=ExecOut,
             responses={200: {"content": {"application/x-ndjson": {}}, "description": "with stream: true"}})
async def exec_(key: str, body: ExecRequest, user: User = Depends(current_user),
                platform: Platform = Depends(get_platform)):
    """Run a command in a running instance, with a deadline and a cap on its output; a
    stream stops the command when the client goes away."""
    instance, now = await run_in_threadpool(actions.running, platform, user, key)
    await run_in_threadpool(actions.audit_exec, platform, user, instance, body.command)
    timeout_s = min(body.timeout_s, platform.settings.exec_timeout_s)
    cap = platform.settings.exec_max_output_bytes if body.stream else EXEC_ANSWER_MAX_BYTES
    with platform.fair_share.place(user, fair_share.EXEC) as place:  # taken before the command starts
        try:
            run = await run_in_threadpool(platform.instances(instance.node_name).exec_stream,
                                          now, body.command, timeout_s, cap)
        except RuntimeError_ as exc:
            raise Conflict(str(exc)) from None
        if body.stream:  # the stream keeps the place until it ends or the client leaves
            return StreamingResponse(place.kept(exec_lines(run)), media_type="application/x-ndjson")
        try:
            output = await run_in_threadpool(b"".join, run)
        finally:
            await run_in_threadpool(run.close)
    return ExecOut(exit_code=-1 if run.exit_code is None else run.exit_code, output=output.decode(errors="replace"),
                   timed_out=run.timed_out, truncated=run.truncated)


async def exec_lines(run: ExecStream) -> AsyncGenerator[bytes, None]:
    """The command's output as NDJSON lines, then how it ended."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    async for chunk in pumped(run):
        if text := decoder.decode(chunk):
            yield (json.dumps({"output": text}) + "\n").encode()
    if tail := decoder.decode(b"", final=True):
        yield (json.dumps({"output": tail}) + "\n").encode()
    end = {"exit_code": -1 if run.exit_code is None else run.exit_code,
           "timed_out": run.timed_out, "truncated": run.truncated}
    yield (json.dumps(end) + "\n").encode()
