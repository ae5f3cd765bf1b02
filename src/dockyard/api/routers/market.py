from fastapi import APIRouter, Depends
from sqlalchemy import select
from sqlalchemy.orm import Session

from dockyard.api.deps import admin_user, current_user, get_db, get_platform
from dockyard.api.schemas import MarketRow, NodeOut
from dockyard.db.models import Node
from dockyard.services import market as market_service
from dockyard.services.platform import Platform

router = APIRouter(tags=["market"])


@router.get("/gpus", response_model=list[MarketRow], dependencies=[Depends(current_user)])
def market(db: Session = Depends(get_db)) -> list[MarketRow]:
    """The GPU market: per node and model, how many GPUs there are and how many are free
    whole, and the shares of one GPU on offer (with what each sharing mode isolates)."""
    return [MarketRow(**row) for row in market_service.offer_rows(db)]


@router.get("/nodes", response_model=list[NodeOut], dependencies=[Depends(admin_user)])
def nodes(db: Session = Depends(get_db), platform: Platform = Depends(get_platform)) -> list[NodeOut]:
    settings = platform.settings
    policy = {c.name: c.placement_policy or settings.placement_policy for c in settings.node_configs()}
    return [NodeOut.model_validate(n, from_attributes=True).model_copy(
                update={"placement_policy": policy.get(n.name, settings.placement_policy)})
            for n in db.scalars(select(Node).order_by(Node.name))]
