import codecs
import json
import shlex
from typing import AsyncGenerator

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from dockyard.api.streams import pumped
from dockyard.api.deps import current_user, get_db, get_driver, get_platform
from dockyard.api.schemas import (
    CloneInstance,
    CloneOut,
    CreateInstance,
    EventOut,
    ExecOut,
    ExecRequest,
    GpuRef,
    ImageOut,
    InstanceOut,
    MigrateInstance,
    MigrateOut,
    OperationOut,
    PatchInstance,
    SaveImage,
    StartInstance,
)
from dockyard.core.errors import Conflict
from dockyard.core.states import Status
from dockyard.core.validation import NAME_PATTERN
from dockyard.db.models import Image, Instance, Node, User
from dockyard.runtimes.base import ExecStream, RuntimeError_
from dockyard.services import allocation, audit, autostop, fair_share, images, instances, queue, volumes
from dockyard.services.clone import clone_instance
from dockyard.services.migration import request_migration
from dockyard.background.driver import Driver
from dockyard.services.platform import Platform
from dockyard.services.billing.statements import instance_costs

router = APIRouter(prefix="/instances", tags=["instances"])


HIDDEN = "(hidden)"


def instance_out(platform: Platform, db: Session, instance: Instance, viewer: User) -> InstanceOut:
    """`viewer` sees the values of their own instance's environment; an admin looking at
    another user's sees only the names."""
    gpus = allocation.assigned_gpus(db, instance.id)
    from dockyard.config import get_settings

    price_per_hour, cost_so_far = instance_costs(db, get_settings(), instance)
    return InstanceOut(
        id=instance.id,
        name=instance.name,
        owner=db.get(User, instance.owner_id).name,
        status=instance.status,
        status_reason=instance.status_reason,
        node=instance.node_name,
        image=db.get(Image, instance.image_id).name,
        gpu_model=instance.gpu_model,
        gpu_count=instance.gpu_count,
        gpu_share=instance.gpu_share,
        no_gpu=instance.no_gpu,
        gpus=[GpuRef(index=g.index, uuid=g.uuid, model=g.model, simulated=g.simulated) for g in gpus],
        env={k: (v if viewer.id == instance.owner_id else HIDDEN) for k, v in (instance.env or {}).items()},
        secret_env_names=sorted(platform.secret_box.open(instance.secret_env)),
        command=instance.command,
        data_disk_gb=instance.data_disk_gb,
        env_check=instance.env_check,
        ssh_command=ssh_command(db, instance),
        last_ssh_at=instance.last_ssh_at,
        last_jupyter_at=instance.last_jupyter_at,
        auto_stop_idle_minutes=instance.auto_stop_idle_minutes,
        auto_stop_max_minutes=instance.auto_stop_max_minutes,
        **queue_view(db, instance),
        auto_stop_gpu_idle_minutes=instance.auto_stop_gpu_idle_minutes,
        auto_stop_gpu_idle_percent=instance.auto_stop_gpu_idle_percent,
        auto_stop_at=instance.auto_stop_at,
        auto_stop_on_exit=instance.auto_stop_on_exit,
        auto_stop_when_exits=instance.auto_stop_when_exits,
        auto_stop_pending=autostop.pending(db, instance),
        auto_stop_notes=autostop.notes(instance, [g.simulated for g in gpus]),
        created_at=instance.created_at,
        started_at=instance.started_at,
        updated_at=instance.updated_at,
        price_per_hour=price_per_hour,
        cost_so_far=cost_so_far,
        volumes=[f"{v.name}:{v.mount_path}" for v in volumes.mounted(db, instance.id)],
        keep_data_on_release=instance.keep_data_on_release,
        auto_release_days=instance.auto_release_days,
    )


def queue_view(db: Session, instance: Instance) -> dict:
    """The queue fields of InstanceOut, set only while queued."""
    if instance.status != Status.QUEUED:
        return {}
    return {"queue_position": queue.position(db, instance), "queued_at": instance.queued_at,
            "queue_deadline": instance.queue_deadline}


def ssh_command(db: Session, instance: Instance) -> str | None:
    if not instance.ssh_port or instance.status == Status.RELEASED:
        return None
    host = db.get(Node, instance.node_name).public_host or "127.0.0.1"
    return f"ssh -p {instance.ssh_port} root@{host}"


def _out(platform: Platform, instance_id: str, viewer: User) -> InstanceOut:
    with platform.reads.begin() as db:
        return instance_out(platform, db, db.get(Instance, instance_id), viewer)


@router.post("", response_model=InstanceOut, status_code=201)
def create(
    body: CreateInstance,
    user: User = Depends(current_user),
    platform: Platform = Depends(get_platform),
    driver: Driver = Depends(get_driver),
) -> InstanceOut:
    given = body.model_dump()
    given["volumes"] = [volumes.parse_mount(text) for text in body.volumes]
    given.update(autostop.rules_for_create(platform.settings, given, body.model_fields_set))
    instance = instances.create_instance(platform, user, instances.CreateRequest(**given))
    driver.kick(instance.id)
    out = _out(platform, instance.id, user)
    out.ssh_password = instance.ssh_password
    return out


@router.get("", response_model=list[InstanceOut])
def list_all(
    all: bool = Query(False, description="include released instances"),
    user: User = Depends(current_user),
    platform: Platform = Depends(get_platform),
    db: Session = Depends(get_db),
) -> list[InstanceOut]:
    return [instance_out(platform, db, i, user) for i in instances.list_instances(db, user, include_released=all)]


@router.get("/{key}", response_model=InstanceOut)
def show(
    key: str,
    wait_for: list[Status] = Query(default=[], description="block until the status is one of these"),
    timeout: float = Query(60, ge=0, le=600),
    user: User = Depends(current_user),
    platform: Platform = Depends(get_platform),
) -> InstanceOut:
    if wait_for:
        with platform.fair_share.place(user, fair_share.WAIT):
            instance = instances.wait_for_status(platform, user, key, {s.value for s in wait_for}, timeout)
    else:
        with platform.reads.begin() as db:
            instance = instances.get_owned(db, user, key)
    return _out(platform, instance.id, user)


@router.patch("/{key}", response_model=InstanceOut)
def patch(key: str, body: PatchInstance, user: User = Depends(current_user),
          platform: Platform = Depends(get_platform)) -> InstanceOut:
    """Change the auto-stop policy or what a release does: only the fields given; null
    turns a rule off (or to the operator's limit)."""
    changes = body.model_dump(exclude_unset=True)
    release = {k: changes.pop(k) for k in instances.RELEASE_FIELDS if k in changes}
    if release:
        instance = instances.set_release_policy(platform, user, key, release)
    if changes or not release:
        instance = autostop.set_policy(platform, user, key, changes)
    return _out(platform, instance.id, user)


@router.post("/{key}/keep", response_model=InstanceOut)
def keep(key: str, user: User = Depends(current_user), platform: Platform = Depends(get_platform)) -> InstanceOut:
    """Keep running: call off a warned auto-stop; the timers count from now (409 if none is pending)."""
    return _out(platform, autostop.keep(platform, user, key).id, user)


@router.get("/{key}/events", response_model=list[EventOut])
def events(key: str, user: User = Depends(current_user), db: Session = Depends(get_db)) -> list[EventOut]:
    instance = instances.get_owned(db, user, key)
    return [EventOut.model_validate(e, from_attributes=True) for e in instances.events(db, instance.id)]


def _act(action, platform: Platform, driver: Driver, user: User, *args) -> InstanceOut:
    instance = action(platform, user, *args)
    driver.kick(instance.id)
    return _out(platform, instance.id, user)


@router.post("/{key}/stop", response_model=InstanceOut)
def stop(key: str, user: User = Depends(current_user), platform: Platform = Depends(get_platform),
         driver: Driver = Depends(get_driver)) -> InstanceOut:
    return _act(instances.request_stop, platform, driver, user, key)


@router.post("/{key}/start", response_model=InstanceOut)
def start(key: str, body: StartInstance | None = None, user: User = Depends(current_user),
          platform: Platform = Depends(get_platform), driver: Driver = Depends(get_driver)) -> InstanceOut:
    body = body or StartInstance()
    if body.migrate:  # docs/migrate.md: its progress is an operation (GET /operations)
        instance, _ = request_migration(platform, driver, user, key, body.node)
        return _out(platform, instance.id, user)
    return _act(instances.request_start, platform, driver, user, key, body.no_gpu, body.gpu_count, body.queue,
                body.queue_timeout_minutes)


@router.post("/{key}/migrate", response_model=MigrateOut, status_code=202)
def migrate(key: str, body: MigrateInstance, user: User = Depends(current_user),
            platform: Platform = Depends(get_platform), driver: Driver = Depends(get_driver)) -> MigrateOut:
    """Move a stopped (or failed) instance to another node: its disks are copied there and
    checked, then it starts there. The operation reports the copy (GET /operations/ID)."""
    instance, op = request_migration(platform, driver, user, key, body.node)
    return MigrateOut(instance=_out(platform, instance.id, user), operation=OperationOut(**op.view()))


@router.delete("/{key}", response_model=InstanceOut)
def release(key: str, keep_data: str | None = Query(None, pattern=NAME_PATTERN,
                                                    description="keep the data disk as the volume of this name"),
            delete_data: bool = Query(False, description="delete the data disk instead of keeping it as a volume"),
            user: User = Depends(current_user), platform: Platform = Depends(get_platform),
            driver: Driver = Depends(get_driver)) -> InstanceOut:
    return _act(instances.request_release, platform, driver, user, key, keep_data, delete_data)


def _running_container(platform: Platform, user: User, key: str) -> tuple[Instance, str]:
    with platform.reads.begin() as db:
        instance = instances.get_owned(db, user, key)
    if not instance.container_id:
        raise Conflict(f"instance {instance.name} has no container yet (it is {instance.status})")
    return instance, instance.container_id


@router.post("/{key}/save", response_model=ImageOut, status_code=202)
def save(key: str, body: SaveImage, user: User = Depends(current_user), platform: Platform = Depends(get_platform),
         driver: Driver = Depends(get_driver)) -> ImageOut:
    """Save the system disk (never the data disk) as a private image; poll the image."""
    with platform.reads.begin() as db:
        instance = instances.get_owned(db, user, key)
    image = images.save_instance(platform, user, instance, body.name)
    with platform.sessions.begin() as db:
        audit.on_instance(db, user, instance, "save", image.name)
    op = platform.operations.start("save", image.name, user, phase="committing the system disk")
    platform.pools.drive.submit(images.finish_save, platform, image.id, instance, op)  # as the driver's steps
    return ImageOut.model_validate(image, from_attributes=True)


@router.post("/{key}/clone", response_model=CloneOut, status_code=202)
def clone(key: str, body: CloneInstance, user: User = Depends(current_user),
          platform: Platform = Depends(get_platform), driver: Driver = Depends(get_driver)) -> CloneOut:
    """A new instance over copies of this one's system and data disks, on its node. The
    operation reports the copy (GET /operations/ID); the instance then starts as usual."""
    instance, op = clone_instance(platform, driver, user, key, body.name, body.gpu_count)
    out = _out(platform, instance.id, user)
    out.ssh_password = instance.ssh_password  # a new one, shown once, as at create
    return CloneOut(instance=out, operation=OperationOut(**op.view()))


@router.post("/{key}/check", response_model=InstanceOut)
def check(key: str, user: User = Depends(current_user), platform: Platform = Depends(get_platform),
          driver: Driver = Depends(get_driver)) -> InstanceOut:
    """Run the environment self-test (dockyard-check) in the instance now."""
    instance, _ = _running_container(platform, user, key)
    if instance.status != Status.RUNNING:
        raise Conflict(f"instance {instance.name} is {instance.status}, not running")
    driver.check_environment(instance.id)
    return _out(platform, instance.id, user)


@router.get("/{key}/logs")
def logs(
    key: str,
    tail: int = Query(200, ge=1, le=100_000),
    follow: bool = False,
    user: User = Depends(current_user),
    platform: Platform = Depends(get_platform),
) -> StreamingResponse:
    instance, container_id = _running_container(platform, user, key)
    if not follow:
        return StreamingResponse(pumped(_logs(platform, instance, container_id, tail, False)), media_type="text/plain")
    with platform.fair_share.place(user, fair_share.LOGS) as place:  # a follow holds a worker: one of the user's few
        chunks = _logs(platform, instance, container_id, tail, True)
        return StreamingResponse(place.kept(pumped(chunks)), media_type="text/plain")


def _logs(platform: Platform, instance: Instance, container_id: str, tail: int, follow: bool):
    try:
        return platform.runtime(instance.node_name).logs(container_id, tail=tail, follow=follow,
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
    instance, container_id = await run_in_threadpool(_running_container, platform, user, key)
    if instance.status != Status.RUNNING:
        raise Conflict(f"instance {instance.name} is {instance.status}, not running")
    await run_in_threadpool(_audit_exec, platform, user, instance, body.command)
    timeout_s = min(body.timeout_s, platform.settings.exec_timeout_s)
    cap = platform.settings.exec_max_output_bytes if body.stream else EXEC_ANSWER_MAX_BYTES
    with platform.fair_share.place(user, fair_share.EXEC) as place:  # taken before the command starts
        try:
            run = await run_in_threadpool(platform.runtime(instance.node_name).exec_stream,
                                          container_id, body.command, timeout_s, cap)
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


def _audit_exec(platform: Platform, user: User, instance: Instance, command: list[str]) -> None:
    if not user.is_admin:  # a user's own execs are not audited: no write transaction for them
        return
    with platform.sessions.begin() as db:
        audit.on_instance(db, user, instance, "exec", shlex.join(command)[:500])


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
