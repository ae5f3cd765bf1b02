"""Links into instances: JupyterLab sign-in links and service ports."""

from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from dockyard.access.origins import instance_base
from dockyard.api.deps import current_user, get_db
from dockyard.db.models import User
from dockyard.services import instances, ports, sessions

router = APIRouter(prefix="/instances", tags=["access"])


class Link(BaseModel):
    url: str


class PortIn(BaseModel):
    port: int = Field(default=6006, description="TensorBoard's by default")
    keep_path: bool = Field(default=False, description=(
        "pass the whole path (/instances/<id>/ports/<port>/...) to an app started with that "
        "base path; by default the app gets only what follows it"))


class PortOut(BaseModel):
    port: int
    url: str
    shared: bool
    keep_path: bool
    base_path: str = Field(description="the path prefix the app is reached under")


@router.post("/{key}/jupyter-link", response_model=Link)
def jupyter_link(key: str, request: Request, user: User = Depends(current_user), db: Session = Depends(get_db)) -> Link:
    """A one-time link (valid two minutes) that opens JupyterLab, on the instance's own host,
    in a browser: a ticket for that host only, not a console session."""
    instance = instances.get_owned(db, user, key)
    ticket = sessions.mint_ticket(db, user, instance.id)
    query = urlencode({"ticket": ticket, "next": f"/instances/{instance.id}/jupyter/lab"})
    return Link(url=f"{instance_base(request, instance.id)}/_dockyard/open?{query}")


def _port_out(request: Request, instance_id: str, row) -> PortOut:
    path = f"/instances/{instance_id}/ports/{row.port}/"
    return PortOut(port=row.port, url=f"{instance_base(request, instance_id)}{path}", shared=row.share_hash is not None,
                   keep_path=row.keep_path, base_path=path)


@router.get("/{key}/ports", response_model=list[PortOut])
def list_ports(key: str, request: Request, user: User = Depends(current_user), db: Session = Depends(get_db)):
    instance = instances.get_owned(db, user, key)
    return [_port_out(request, instance.id, row) for row in ports.listed(db, instance)]


@router.post("/{key}/ports", response_model=PortOut, status_code=201)
def expose(key: str, body: PortIn, request: Request, user: User = Depends(current_user),
           db: Session = Depends(get_db)) -> PortOut:
    """Expose an HTTP port at /instances/<id>/ports/<port>/ on the instance's own host, for you only."""
    instance = instances.get_owned(db, user, key)
    return _port_out(request, instance.id, ports.expose(db, instance, body.port, keep_path=body.keep_path))


@router.delete("/{key}/ports/{port}", status_code=204)
def unexpose(key: str, port: int, request: Request, user: User = Depends(current_user),
             db: Session = Depends(get_db)) -> None:
    db.delete(ports.find(db, instances.get_owned(db, user, key), port))
    _revoked(request, db)


@router.post("/{key}/ports/{port}/share", response_model=Link)
def share(key: str, port: int, request: Request, user: User = Depends(current_user),
          db: Session = Depends(get_db)) -> Link:
    """An unguessable link anyone may open, until revoked (a new one revokes the old)."""
    row = ports.find(db, instances.get_owned(db, user, key), port)
    link = ports.share(db, row)
    _revoked(request, db)  # the old link
    return Link(url=f"{instance_base(request, row.instance_id)}/shared/{link}/")


@router.delete("/{key}/ports/{port}/share", status_code=204)
def unshare(key: str, port: int, request: Request, user: User = Depends(current_user),
            db: Session = Depends(get_db)) -> None:
    ports.find(db, instances.get_owned(db, user, key), port).share_hash = None
    _revoked(request, db)


def _revoked(request: Request, db: Session) -> None:
    """Committed first, so that the access paths cannot re-read what was just taken away."""
    db.commit()
    request.app.state.platform.access_revoked()
