"""Images: the catalog (built on nodes), images admins register by reference, and the
system disks users save. Also the per-node image cache."""

from __future__ import annotations

import logging
from typing import Callable

from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session

from dockyard.core import catalog
from dockyard.core.catalog import LOCK_DIGEST_LABEL, LOCK_LABEL, CatalogEntry
from dockyard.core.errors import Conflict, DockyardError, Forbidden, InvalidInput, NotFound
from dockyard.core.kinds import ImageKind, NoticeKind
from dockyard.core.states import ImageStatus, Status
from dockyard.db.models import Image, Instance, InstanceEvent, NodeImage, User, utcnow
from dockyard.db.session import insert_unique
from dockyard.runtimes.base import HELPER_LABEL, Feature, ImageInfo, RuntimeError_
from dockyard.services import audit, notifications
from dockyard.services.statuses import set_status
from dockyard.services.held import held
from dockyard.services.operations import Operation
from dockyard.services.platform import Platform

log = logging.getLogger(__name__)
GIB = 1024**3
Progress = Callable[[str], None]


# ---- reading -------------------------------------------------------------------------


def visible(user: User):
    """Public images, and the user's own (admins see all); never deleted ones."""
    live = Image.status != "deleted"
    return live if user.is_admin else live & or_(Image.public.is_(True), Image.owner_id == user.id)


def list_images(db: Session, user: User, **filters: str | None) -> list[Image]:
    query = select(Image).order_by(Image.kind, Image.name)
    query = query.where(visible(user))
    for column, value in filters.items():
        if value:
            query = query.where(getattr(Image, column) == value)
    return list(db.scalars(query))


def nodes_holding(db: Session, image_id: int) -> list[str]:
    return list(db.scalars(select(NodeImage.node_name).where(NodeImage.image_id == image_id).order_by(NodeImage.node_name)))


def find_image(db: Session, user: User, name: str) -> Image:
    """An image the user may see, by name ("pytorch-2.9-cu128", "alice/env:v1" or,
    for one's own saved images, "env:v1") or by reference."""
    for candidate in (name, f"{user.name}/{name}" if ":" in name else None):
        if candidate is None:
            continue
        query = select(Image).where(or_(Image.name == candidate, Image.ref == candidate), visible(user))
        image = db.scalars(query.order_by(Image.id)).first()
        if image:
            return image
    raise NotFound(f"image {name!r} not found; see `dockyard images`")


def image_named(db: Session, user: User, name: str) -> Image:
    """The image a create names, refused as bad input (field `image`) when unknown.
    Whether it is ready is checked with the nodes (allocation.nodes_for_image)."""
    try:
        return find_image(db, user, name)
    except NotFound:
        raise InvalidInput(f"image: unknown image {name!r}; see `dockyard images`", field="image") from None


def require_ready(image: Image) -> None:
    if image.status == "absent":
        raise Conflict(f"image {image.name} is not built yet; an admin runs `dockyard admin images build {image.name}`")
    if image.status != "ready":
        raise Conflict(f"image {image.name} is {image.status}" + (f": {image.status_reason}" if image.status_reason else ""))


# ---- catalog and cache ---------------------------------------------------------------


def load_catalog(platform: Platform) -> None:
    """Read and check the catalog file, and load it into the database."""
    path = platform.settings.catalog_path or catalog.default_catalog_path()
    entries = catalog.load_catalog(path)
    catalog.validate(entries)
    platform.catalog = {e.name: e for e in entries}
    sync_catalog(platform, entries)


def sync_catalog(platform: Platform, entries: list[CatalogEntry]) -> None:
    """Load the catalog into the database (new entries, changed descriptions)."""
    with platform.sessions.begin() as db:
        for entry in entries:
            image = db.scalars(select(Image).where(Image.name == entry.name)).first()
            if image is None:
                image = Image(name=entry.name, kind=ImageKind.CATALOG, public=True)
                set_status(image, ImageStatus.ABSENT)
                db.add(image)
            elif image.kind != ImageKind.CATALOG:
                log.warning("catalog entry %s clashes with a %s image; skipped", entry.name, image.kind)
                continue
            image.ref, image.framework, image.framework_version = entry.ref, entry.framework, entry.framework_version
            image.cuda, image.cudnn, image.python, image.os = entry.cuda, entry.cudnn, entry.python, entry.os
            image.min_driver, image.is_default, image.description = entry.min_driver, entry.default, entry.description


def refresh_cache(platform: Platform) -> None:
    """Record which node holds which image, and make found catalog images ready."""
    heal_interrupted(platform)
    with platform.sessions.begin() as db:
        images = [(i.id, i.ref, i.status) for i in db.scalars(select(Image).where(Image.status.in_(["ready", "absent"])))]
    for node, runtime in list(platform.runtimes.items()):
        present = {}
        for image_id, ref, _ in images:
            info = runtime.image_info(ref)
            if info:
                present[image_id] = info
        with platform.sessions.begin() as db:
            db.execute(delete(NodeImage).where(NodeImage.node_name == node, NodeImage.image_id.not_in(list(present))))
            for image_id, info in present.items():
                _record_on_node(db, node, image_id, info)


def _record_on_node(db: Session, node: str, image_id: int, info: ImageInfo) -> None:
    row = db.get(NodeImage, (node, image_id)) or NodeImage(node_name=node, image_id=image_id)
    row.digest, row.checked_at = info.id, utcnow()
    db.add(row)
    image = db.get(Image, image_id)
    image.digest, image.size_bytes = info.id, info.size_bytes
    # The Python stack the image was built with (images/locks/), from its labels.
    image.stack_lock = info.labels.get(LOCK_LABEL)
    image.stack_lock_sha256 = info.labels.get(LOCK_DIGEST_LABEL)
    if image.status == ImageStatus.ABSENT:
        set_status(image, ImageStatus.READY)


def prepare_image(platform: Platform, name: str, node: str | None, on_progress: Progress) -> Image:
    """Put an image on a node (all nodes when none is named): build a catalog image from
    its recipe, pull any other. Creates on those nodes then need not wait for it."""
    from dockyard.runtimes import image_build  # only operators building images need it

    with platform.sessions.begin() as db:
        image = db.scalars(select(Image).where(Image.name == name)).first()
        if image is None:
            raise NotFound(f"image {name!r} not found")
        if image.kind == ImageKind.SAVED:
            raise InvalidInput(f"{name} is a saved image; it lives on the node it was saved on")
        entry = platform.catalog.get(name)
    for target in prepare_targets(platform, node, build=entry is not None):
        runtime = platform.runtime(target)
        on_progress(f"[{target}] {'building' if entry else 'pulling'} {image.ref}")
        # Only an image no node holds is building: one built on an earlier target stays ready.
        _set_status(platform, image.id, ImageStatus.BUILDING if entry else None, only_if=ImageStatus.ABSENT)
        try:
            if entry:
                runtime.build_image(entry, image_build.recipe_dir(), platform.settings.build_ca_bundle, on_progress)
            else:
                runtime.ensure_image(image.ref, on_progress)
            info = runtime.image_info(image.ref)
        except (RuntimeError_, image_build.BuildError) as exc:
            _set_status(platform, image.id, ImageStatus.ABSENT if entry else None, str(exc), only_if=ImageStatus.BUILDING)
            raise Conflict(f"{'build' if entry else 'pull'} of {name} on {target} failed: {exc}") from None
        with platform.sessions.begin() as db:
            _record_on_node(db, target, image.id, info)
            row = db.get(Image, image.id)
            set_status(row, ImageStatus.READY)
            row.status_reason = None
        on_progress(f"[{target}] {image.ref} ready ({info.size_bytes / GIB:.2f} GiB, {info.id[:19]})")
    with platform.sessions.begin() as db:
        return db.get(Image, image.id)


def prepare_targets(platform: Platform, node: str | None, build: bool) -> list[str]:
    """The nodes a build or pull goes to: the one named, refused when it lacks the
    ability, or every node that has it."""
    feature = Feature.IMAGE_BUILDS if build else Feature.IMAGE_CACHE
    what = f"images cannot be {'built' if build else 'pulled ahead'} on"
    if node:
        platform.refuse_lacking(node, feature, f"node: {what} node {node}", field="node")
        return [node]
    able = [n for n in sorted(platform.runtimes) if not platform.lacks(n, feature)]
    if platform.runtimes and not able:
        platform.refuse_lacking(sorted(platform.runtimes)[0], feature, f"{what} any node")
    return able


def _set_status(platform: Platform, image_id: int, status: ImageStatus | None, reason: str | None = None,
                only_if: ImageStatus | None = None) -> None:
    if status is None:
        return
    with platform.sessions.begin() as db:
        image = db.get(Image, image_id)
        if only_if is None or image.status == only_if:
            set_status(image, status)
            image.status_reason = reason


def start_prepare(platform: Platform, admin: User, name: str, node: str | None,
                  on_progress: Callable[[str | None], None] | None = None) -> Operation:
    """`prepare_image` in the background, audited, as an operation every admin sees live;
    `on_progress` also gets each line, then None at the end (the operation says how it went)."""
    with platform.sessions.begin() as db:
        if db.scalars(select(Image.id).where(Image.name == name)).first() is None:
            raise NotFound(f"image {name!r} not found")
        kind = "build" if name in platform.catalog else "pull"
        prepare_targets(platform, node, build=kind == "build")  # refused before it is audited
        audit.record(db, admin, f"image.{kind}", name, f"node {node}" if node else "all nodes")
    op = platform.operations.start(kind, name, admin, admins=True)

    def line(text: str) -> None:
        op.update(line=text)
        if on_progress:
            on_progress(text)

    def work() -> None:
        try:
            prepare_image(platform, name, node, line)
            op.finish()
        except DockyardError as exc:
            op.finish(error=exc.message)
        except Exception as exc:  # reported, not left hanging
            op.finish(error=f"{type(exc).__name__}: {exc}")
        if on_progress:
            on_progress(None)

    platform.pools.prepares.submit(work)
    return op


# ---- registered images ---------------------------------------------------------------


def add_image(platform: Platform, ref: str, name: str, admin: User) -> Image:
    """Register `ref` as `name`, after checking that every online node has it (or pulls it)."""
    with platform.sessions.begin() as db:
        if db.scalars(select(Image).where(Image.name == name)).first():
            raise Conflict(f"image name {name!r} is already taken", field="name")
    infos = {}
    # Only nodes that keep pulled images hold it (placement looks for it there).
    cached = {n: r for n, r in platform.runtimes.items() if not platform.lacks(n, Feature.IMAGE_CACHE)}
    if platform.runtimes and not cached:
        platform.refuse_lacking(sorted(platform.runtimes)[0], Feature.IMAGE_CACHE, f"ref: no node can pull {ref} ahead",
                                field="ref")
    for node, runtime in cached.items():
        try:
            runtime.ensure_image(ref)
        except RuntimeError_ as exc:
            raise InvalidInput(f"ref: {exc} (node {node})", field="ref") from None
        infos[node] = runtime.image_info(ref)
    with platform.sessions.begin() as db:
        image = Image(name=name, ref=ref, kind=ImageKind.REGISTERED, public=True, created_by=admin.id)
        set_status(image, ImageStatus.READY)
        insert_unique(db, image, Conflict(f"image name {name!r} is already taken", field="name"))
        audit.record(db, admin, "image.register", name, ref)
        for node, info in infos.items():
            _record_on_node(db, node, image.id, info)
    return image


# ---- saved images ----------------------------------------------------------------------


def save_instance(platform: Platform, user: User, instance: Instance, name_tag: str) -> Image:
    """Start saving an instance's system disk (never its data disk) as a private image.
    Returns the image row in status `saving`; `finish_save` does the Docker work."""
    if instance.status == Status.RELEASED or instance.status == Status.RELEASING:
        raise Conflict(f"instance {instance.name} is {instance.status}; there is no system disk to save")
    if not instance.container_id:
        raise Conflict(f"instance {instance.name} has no system disk yet (it is {instance.status})")
    platform.refuse_lacking(instance.node_name, Feature.SAVED_IMAGES, f"instance {instance.name} cannot be saved as an image")
    name, _, tag = name_tag.partition(":")
    full_name = f"{user.name}/{name}:{tag or 'latest'}"
    settings = platform.settings
    with platform.sessions.begin() as db:
        count, size = db.execute(
            select(func.count(Image.id), func.coalesce(func.sum(Image.size_bytes), 0))
            .where(Image.owner_id == user.id, Image.kind == ImageKind.SAVED, Image.status != "deleted")
        ).one()
        if count >= settings.max_saved_images:
            raise Conflict(f"quota: you have {count} saved images, the most allowed is {settings.max_saved_images}")
        if size >= settings.max_saved_images_gb * GIB:
            raise Conflict(f"quota: your saved images take {size / GIB:.1f} GB of "
                           f"{settings.max_saved_images_gb:g} GB allowed; delete some first")
        source = db.get(Image, instance.image_id)
        image = Image(
            name=full_name, ref=f"dy-{platform.deployment}-saved/u{user.id}-{name}:{tag or 'latest'}",
            kind=ImageKind.SAVED, status_reason="committing the system disk", owner_id=user.id,
            public=False, created_by=user.id, source_instance_id=instance.id,
            framework=source.framework, framework_version=source.framework_version, cuda=source.cuda,
            cudnn=source.cudnn, python=source.python, os=source.os, min_driver=source.min_driver,
            description=f"saved from instance {instance.name} ({source.name})",
        )
        set_status(image, ImageStatus.SAVING)
        insert_unique(db, image, Conflict(f"name: you already have an image named {full_name!r}", field="name"))
    return image


def finish_save(platform: Platform, image_id: int, instance: Instance, op: Operation) -> None:
    with platform.sessions.begin() as db:
        image = db.get(Image, image_id)
    repository, tag = image.ref.rsplit(":", 1)
    made = False
    try:
        # A node not connected fails the save here, rather than leaving the row saving.
        runtime = platform.runtime(instance.node_name)
        # Labels: not the instance's (its release must not delete this), but ours.
        platform.instances(instance.node_name).save_image(
            held(instance), repository, tag,
            labels={"dockyard.instance": "", "dockyard.saved": image.name, **platform.labels})
        made = True
        info = runtime.image_info(image.ref)
        if info is None:
            raise RuntimeError_("the saved image is not on the node")
    except (RuntimeError_, DockyardError) as exc:
        if made:  # nor an image without a row: nothing would ever remove it
            try:
                runtime.remove_image(image.ref)
            except RuntimeError_ as again:
                log.warning("could not remove the image of the failed save %s: %s", image.ref, again)
        # Nothing half-made: no row without an image. The reason goes to the instance's events.
        with platform.sessions.begin() as db:
            db.delete(db.get(Image, image_id))
            current = db.get(Instance, instance.id).status
            db.add(InstanceEvent(instance_id=instance.id, from_status=current, to_status=current,
                                 cause=f"saving image {image.name} failed: {exc}"))
            notifications.post(db, instance.owner_id, NoticeKind.SAVE, f"saving image {image.name} failed: {exc}")
        op.finish(error=f"saving image {image.name} failed: {exc}")
        return
    op.update("recording the image", 90)
    with platform.sessions.begin() as db:
        _record_on_node(db, instance.node_name, image_id, info)
        row = db.get(Image, image_id)
        set_status(row, ImageStatus.READY)
        row.status_reason = None
        notifications.post(db, instance.owner_id, NoticeKind.SAVE,
                           f"image {image.name} saved from {instance.name} ({info.size_bytes / 1e9:.2f} GB)")
    op.finish()


def heal_interrupted(platform: Platform) -> None:
    """After a crash: a save that left its image becomes ready, one that did not is
    dropped; a build that never finished leaves its catalog entry absent."""
    for runtime in platform.runtimes.values():  # helpers of a save that a crash interrupted
        for helper in runtime.list({**platform.labels, HELPER_LABEL: "save"}):
            runtime.remove(helper.id)
    with platform.sessions.begin() as db:
        for image in db.scalars(select(Image).where(Image.status == "building")):
            set_status(image, ImageStatus.ABSENT)
        saving = [(i.id, i.ref, db.get(Instance, i.source_instance_id).node_name)
                  for i in db.scalars(select(Image).where(Image.status == "saving"))]
    for image_id, ref, node in saving:
        runtime = platform.runtimes.get(node)
        info = runtime.image_info(ref) if runtime else None
        with platform.sessions.begin() as db:
            if info:
                _record_on_node(db, node, image_id, info)
                set_status(db.get(Image, image_id), ImageStatus.READY)
            elif runtime:
                db.delete(db.get(Image, image_id))


def delete_image(platform: Platform, user: User, name: str) -> None:
    with platform.sessions.begin() as db:
        image = find_image(db, user, name)
        if image.owner_id != user.id and not user.is_admin:
            raise Forbidden(f"image {image.name} is not yours to delete")
        in_use = db.scalars(select(Instance.name).where(Instance.image_id == image.id,
                                                        Instance.status != Status.RELEASED)).first()
        if in_use:
            raise Conflict(f"image {image.name} is used by instance {in_use}; release it first")
        if image.kind == ImageKind.CATALOG:
            raise Conflict("catalog images are removed from images/catalog.toml, not deleted")
        nodes, ref, image_id, what = nodes_holding(db, image.id), image.ref, image.id, (image.name, image.kind)
    if image.kind == ImageKind.SAVED:
        for node in nodes:
            platform.runtime(node).remove_image(ref)
    with platform.sessions.begin() as db:
        if user.is_admin and image.owner_id != user.id:
            audit.record(db, user, "image.delete", *what)
        db.execute(delete(NodeImage).where(NodeImage.image_id == image_id))
        # Released instances keep their image id for history: detach rather than delete then.
        if db.scalars(select(Instance.id).where(Instance.image_id == image_id)).first():
            row = db.get(Image, image_id)
            set_status(row, ImageStatus.DELETED)
            row.public, row.name = False, f"{row.name}#deleted-{image_id}"
        else:
            db.delete(db.get(Image, image_id))


def publish(platform: Platform, name: str, user: User) -> Image:
    with platform.sessions.begin() as db:
        image = find_image(db, user, name)
        require_ready(image)
        image.public = True
        audit.record(db, user, "image.publish", image.name)
        return image
