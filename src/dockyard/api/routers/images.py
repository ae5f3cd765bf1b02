from fastapi import APIRouter, Depends
from sqlalchemy.orm import Session

from dockyard.api.deps import admin_user, current_user, get_db, get_platform
from dockyard.api.schemas import ImageIn, ImageOut
from dockyard.db.models import User
from dockyard.services import images
from dockyard.services.platform import Platform

router = APIRouter(tags=["images"])


@router.get("/images", response_model=list[ImageOut], dependencies=[Depends(current_user)])
def list_images(db: Session = Depends(get_db)) -> list[ImageOut]:
    return [ImageOut.model_validate(i, from_attributes=True) for i in images.list_images(db)]


@router.post("/images", response_model=ImageOut, status_code=201)
def add_image(body: ImageIn, user: User = Depends(admin_user), platform: Platform = Depends(get_platform)) -> ImageOut:
    image = images.add_image(platform, body.ref, body.name, user.id)
    return ImageOut.model_validate(image, from_attributes=True)
