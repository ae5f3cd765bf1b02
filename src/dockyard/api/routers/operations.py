"""Long operations in progress (saves, clones, image builds and pulls): yours, and for
admins also every build and pull. Kept in memory some minutes after their end."""

from fastapi import APIRouter, Depends

from dockyard.api.deps import current_user, get_platform
from dockyard.api.schemas import OperationOut
from dockyard.db.models import User
from dockyard.services.platform import Platform

router = APIRouter(prefix="/operations", tags=["operations"])


@router.get("", response_model=list[OperationOut])
def listed(user: User = Depends(current_user), platform: Platform = Depends(get_platform)) -> list[OperationOut]:
    return [OperationOut(**op.view()) for op in platform.operations.listed(user)]


@router.get("/{op_id}", response_model=OperationOut)
def show(op_id: str, user: User = Depends(current_user), platform: Platform = Depends(get_platform)) -> OperationOut:
    return OperationOut(**platform.operations.get(user, op_id).view())
