import json
import queue

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from dockyard.api.deps import admin_user, current_user, get_db, get_platform
from dockyard.api.schemas import CacheRow, ImageOut
from dockyard.core.inputs import ImageIn
from dockyard.db.models import Image, NodeImage, User
from dockyard.services import images
from dockyard.services.platform import Platform

router = APIRouter(tags=["images"])


def image_out(db: Session, image: Image) -> ImageOut:
    out = ImageOut.model_validate(image, from_attributes=True)
    out.nodes = images.nodes_holding(db, image.id)
    out.packages = dict(line.split("==", 1) for line in (image.stack_lock or "").splitlines() if "==" in line)
    return out


def _answer(platform: Platform, image_id: int) -> ImageOut:
    """The image as it is now (read after the change that made it so)."""
    with platform.reads.begin() as db:
        return image_out(db, db.get(Image, image_id))


@router.get("/images", response_model=list[ImageOut])
def list_images(
    framework: str | None = None,
    framework_version: str | None = Query(None, alias="version"),
    python: str | None = None,
    cuda: str | None = None,
    user: User = Depends(current_user),
    db: Session = Depends(get_db),
) -> list[ImageOut]:
    """Images you may use, filtered as in a picker: framework, version, Python, CUDA."""
    found = images.list_images(db, user, framework=framework, framework_version=framework_version,
                               python=python, cuda=cuda)
    return [image_out(db, i) for i in found]


@router.get("/images/cache", response_model=list[CacheRow], dependencies=[Depends(admin_user)])
def cache(db: Session = Depends(get_db)) -> list[CacheRow]:
    """Which node holds which image."""
    rows = db.execute(select(NodeImage, Image).join(Image, Image.id == NodeImage.image_id)
                      .order_by(NodeImage.node_name, Image.name)).all()
    return [CacheRow(node=n.node_name, image=i.name, ref=i.ref, digest=n.digest, checked_at=n.checked_at)
            for n, i in rows]


@router.get("/images/{name:path}", response_model=ImageOut)
def show(name: str, user: User = Depends(current_user), db: Session = Depends(get_db)) -> ImageOut:
    return image_out(db, images.find_image(db, user, name))


@router.post("/images", response_model=ImageOut, status_code=201)
def add_image(body: ImageIn, user: User = Depends(admin_user), platform: Platform = Depends(get_platform)) -> ImageOut:
    return _answer(platform, images.add_image(platform, body.ref, body.name, user).id)


@router.post("/images/{name:path}/prepare")
def prepare(name: str, node: str | None = None, user: User = Depends(admin_user),
            platform: Platform = Depends(get_platform)) -> StreamingResponse:
    """Build (catalog images) or pull (others) onto a node, or every node. Streams
    progress as JSON lines: {"progress": ...}, then {"image": ...} or {"error": ...}.
    The console shows the same operation live."""
    if node is not None:
        platform.runtime(node)  # 404 before the stream starts
    lines: queue.Queue = queue.Queue()
    op = images.start_prepare(platform, user, name, node, lines.put)

    def stream():
        while (text := lines.get()) is not None:
            yield json.dumps({"progress": text}) + "\n"
        if op.error is not None:
            yield json.dumps({"error": op.error}) + "\n"
            return
        with platform.reads.begin() as db:
            image_id = images.find_image(db, user, name).id
        yield json.dumps({"image": _answer(platform, image_id).model_dump(mode="json")}) + "\n"

    return StreamingResponse(stream(), media_type="application/x-ndjson")


@router.post("/images/{name:path}/publish", response_model=ImageOut)
def publish(name: str, user: User = Depends(admin_user), platform: Platform = Depends(get_platform)) -> ImageOut:
    return _answer(platform, images.publish(platform, name, user).id)


@router.delete("/images/{name:path}", status_code=204)
def delete(name: str, user: User = Depends(current_user), platform: Platform = Depends(get_platform)) -> None:
    images.delete_image(platform, user, name)
