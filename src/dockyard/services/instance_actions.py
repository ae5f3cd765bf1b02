"""A user's actions on an instance, whole: the request recorded, then what makes it go
(the driver kicked, the save's background copy). The API's routes and the console's
buttons both call these, so an action does the same from either."""

from __future__ import annotations

import shlex

from dockyard.core.errors import Conflict
from dockyard.core.states import Status
from dockyard.db.models import Image, Instance, User
from dockyard.runtimes.base import Feature
from dockyard.runtimes.instances import Held
from dockyard.services import audit, autostop, images, instances, volumes
from dockyard.services.clone import clone_instance
from dockyard.services.held import held
from dockyard.services.migration import request_migration
from dockyard.services.operations import Operation
from dockyard.services.platform import Platform
from dockyard.services.work import Driving


def lacking(platform: Platform, instance: Instance) -> dict[str, str]:
    """The actions the instance's node would refuse for an ability it lacks, with the
    reason: the console shows those buttons disabled, saying why."""
    needs = {"save": Feature.SAVED_IMAGES, "clone": Feature.DISK_CLONES, "migrate": Feature.MIGRATION}
    if instances.stop_ends_a_container(instance):
        needs["stop"] = Feature.KEPT_SYSTEM_DISK
    if instance.gpu_count:
        needs["start"] = needs["start-queue"] = Feature.GPU_PINNING
    return {action: f"{why} (no {feature})" for action, feature in needs.items()
            if (why := platform.lacks(instance.node_name, feature))}


def create(platform: Platform, driver: Driving, user: User, given: dict, named: set[str]) -> Instance:
    """`given`: a create's fields (core/inputs.py CreateInstance); `named`: those its user
    set, the rest taking the operator's defaults."""
    given = {**given, "volumes": [volumes.parse_mount(text) for text in given.get("volumes", [])]}
    given.update(autostop.rules_for_create(platform.settings, given, named))
    instance = instances.create_instance(platform, user, instances.CreateRequest(**given))
    driver.kick(instance.id)
    return instance


def stop(platform: Platform, driver: Driving, user: User, key: str) -> Instance:
    instance = instances.request_stop(platform, user, key)
    driver.kick(instance.id)
    return instance


def start(platform: Platform, driver: Driving, user: User, key: str, no_gpu: bool = False,
          gpu_count: int | None = None, queue: bool = False, queue_timeout_minutes: int | None = None,
          migrate: bool = False, node: str | None = None) -> Instance:
    if migrate:  # docs/migrate.md: its progress is an operation; the copy runs in the background
        return request_migration(platform, driver, user, key, node)[0]
    instance = instances.request_start(platform, user, key, no_gpu, gpu_count, queue, queue_timeout_minutes)
    driver.kick(instance.id)
    return instance


def migrate(platform: Platform, driver: Driving, user: User, key: str, node: str | None) -> tuple[Instance, Operation]:
    return request_migration(platform, driver, user, key, node)


def release(platform: Platform, driver: Driving, user: User, key: str, keep_data: str | None = None,
            delete_data: bool = False) -> Instance:
    instance = instances.request_release(platform, user, key, keep_data, delete_data)
    driver.kick(instance.id)
    return instance


def clone(platform: Platform, driver: Driving, user: User, key: str, name: str,
          gpu_count: int | None = None) -> tuple[Instance, Operation]:
    return clone_instance(platform, driver, user, key, name, gpu_count)


def save(platform: Platform, driver: Driving, user: User, key: str, name: str) -> Image:
    """Save the system disk (never the data disk) as a private image, committed in the
    background; the image's status says when it is ready."""
    with platform.reads.begin() as db:
        instance = instances.get_owned(db, user, key)
    image = images.save_instance(platform, user, instance, name)
    with platform.sessions.begin() as db:
        audit.on_instance(db, user, instance, "save", image.name)
    op = platform.operations.start("save", image.name, user, phase="committing the system disk")
    platform.pools.drive.submit(images.finish_save, platform, image.id, instance, op)  # as the driver's steps
    return image


def change(platform: Platform, user: User, key: str, changes: dict) -> Instance:
    """Change the auto-stop policy or what a release does: only the fields given; None
    turns a rule off (or to the operator's limit)."""
    changes = dict(changes)
    release_policy = {k: changes.pop(k) for k in instances.RELEASE_FIELDS if k in changes}
    if release_policy:
        instance = instances.set_release_policy(platform, user, key, release_policy)
    if changes or not release_policy:
        instance = autostop.set_policy(platform, user, key, changes)
    return instance


def running_container(platform: Platform, user: User, key: str) -> tuple[Instance, Held]:
    """The instance and what its engine holds of it; a Conflict while it has no container."""
    with platform.reads.begin() as db:
        instance = instances.get_owned(db, user, key)
    if not instance.container_id:
        raise Conflict(f"instance {instance.name} has no container yet (it is {instance.status})")
    return instance, held(instance)


def running(platform: Platform, user: User, key: str) -> tuple[Instance, Held]:
    """As running_container, and it must be running."""
    instance, now = running_container(platform, user, key)
    if instance.status != Status.RUNNING:
        raise Conflict(f"instance {instance.name} is {instance.status}, not running")
    return instance, now


def audit_exec(platform: Platform, user: User, instance: Instance, command: list[str]) -> None:
    """An admin's exec in an instance is audited; a user's own are not (no write
    transaction for them)."""
    if user.is_admin:
        with platform.sessions.begin() as db:
            audit.on_instance(db, user, instance, "exec", shlex.join(command)[:500])


def check(platform: Platform, driver: Driving, user: User, key: str) -> Instance:
    """Run the environment self-test (dockyard-check) in the instance now."""
    instance, _ = running(platform, user, key)
    driver.check_environment(instance.id)
    return instance
