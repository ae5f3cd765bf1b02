from fastapi import APIRouter, Depends
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from dockyard.api.deps import admin_user, current_user, get_db
from dockyard.api.schemas import MarketRow, NodeOut
from dockyard.db.models import Gpu, GpuAssignment, Node

router = APIRouter(tags=["market"])


@router.get("/gpus", response_model=list[MarketRow], dependencies=[Depends(current_user)])
def market(db: Session = Depends(get_db)) -> list[MarketRow]:
    """The GPU market: per node and model, how many GPUs there are and how many are free."""
    held = func.count(GpuAssignment.gpu_id)
    rows = db.execute(
        select(Node, Gpu.model, func.max(Gpu.memory_mb), func.count(Gpu.id), held, func.max(case((Gpu.simulated, 1), else_=0)))
        .join(Gpu, Gpu.node_name == Node.name)
        .outerjoin(GpuAssignment, GpuAssignment.gpu_id == Gpu.id)
        .where(Gpu.present.is_(True))
        .group_by(Node.name, Gpu.model)
        .order_by(Node.name, Gpu.model)
    ).all()
    return [
        MarketRow(
            node=node.name, model=model, memory_mb=memory, total=total, free=total - used if node.online else 0,
            simulated=bool(simulated), driver_version=node.driver_version, cuda_version=node.cuda_version,
            online=node.online,
        )
        for node, model, memory, total, used, simulated in rows
    ]


@router.get("/nodes", response_model=list[NodeOut], dependencies=[Depends(admin_user)])
def nodes(db: Session = Depends(get_db)) -> list[NodeOut]:
    return [NodeOut.model_validate(n, from_attributes=True) for n in db.scalars(select(Node).order_by(Node.name))]
