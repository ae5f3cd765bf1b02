"""Volumes (docs/volumes.md): a user's own disks. Others' answer 404."""

from fastapi import APIRouter, Depends, Query
from sqlalchemy.orm import Session

from dockyard.api.deps import current_user, get_db, get_platform
from dockyard.api.schemas import VolumeOut, VolumeResize
from dockyard.core.inputs import VolumeIn
from dockyard.db.models import User, Volume
from dockyard.services import volumes
from dockyard.services.platform import Platform

router = APIRouter(prefix="/volumes", tags=["volumes"])


def volume_out(db: Session, volume: Volume) -> VolumeOut:
    return VolumeOut(**volumes.volume_view(db, volume))


def _out(platform: Platform, volume_id: str) -> VolumeOut:
    with platform.sessions.begin() as db:
        return volume_out(db, db.get(Volume, volume_id))


@router.get("", response_model=list[VolumeOut])
def list_all(all: bool = Query(False, description="include deleted"), user: User = Depends(current_user),
             db: Session = Depends(get_db)) -> list[VolumeOut]:
    return [volume_out(db, v) for v in volumes.list_volumes(db, user, include_deleted=all)]


@router.post("", response_model=VolumeOut, status_code=201)
def create(body: VolumeIn, user: User = Depends(current_user), platform: Platform = Depends(get_platform)) -> VolumeOut:
    return _out(platform, volumes.create_volume(platform, user, body.name, body.size_gb, body.node).id)


@router.get("/{key}", response_model=VolumeOut)
def show(key: str, user: User = Depends(current_user), platform: Platform = Depends(get_platform)) -> VolumeOut:
    """With the bytes its files take, measured on its disk."""
    return VolumeOut(**volumes.owned_view(platform, user, key))


@router.post("/{key}/resize", response_model=VolumeOut)
def resize(key: str, body: VolumeResize, user: User = Depends(current_user),
           platform: Platform = Depends(get_platform)) -> VolumeOut:
    """Grow, or shrink above the data in it; the instance mounting it must be stopped."""
    return _out(platform, volumes.resize_volume(platform, user, key, body.size_gb).id)


@router.delete("/{key}", response_model=VolumeOut)
def remove(key: str, user: User = Depends(current_user), platform: Platform = Depends(get_platform)) -> VolumeOut:
    """Delete the volume and its files; one an instance mounts answers 409."""
    return _out(platform, volumes.remove_volume(platform, user, key).id)
