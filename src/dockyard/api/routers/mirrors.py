"""Package mirrors for new instances: the operator's site settings and each user's own
additions (written into /etc/pip.conf, apt sources and .condarc; see docs/images.md)."""

from dataclasses import asdict

from fastapi import APIRouter, Depends
from sqlalchemy.orm import Session

from dockyard.api.deps import admin_user, current_user, get_db
from dockyard.api.schemas import MirrorsIn, MirrorsOut, MirrorsView
from dockyard.db.models import User
from dockyard.services import audit, mirrors

router = APIRouter(prefix="/mirrors", tags=["package mirrors"])


def _out(settings) -> MirrorsOut:
    return MirrorsOut(**asdict(settings))


@router.get("", response_model=MirrorsView)
def show(user: User = Depends(current_user), db: Session = Depends(get_db)) -> MirrorsView:
    """The site's mirrors and your additions, as your next new instance gets them."""
    return MirrorsView(site=_out(mirrors.get(db, None)), mine=_out(mirrors.get(db, user)))


@router.put("", response_model=MirrorsOut)
def set_mine(body: MirrorsIn, user: User = Depends(current_user), db: Session = Depends(get_db)) -> MirrorsOut:
    """Replace your additions: an extra pip index, apt source, conda channel and CAs."""
    settings = mirrors.put(db, user, **body.model_dump())
    db.commit()  # before the answer: an instance created right after it must get them
    return _out(settings)


@router.put("/site", response_model=MirrorsOut)
def set_site(body: MirrorsIn, admin: User = Depends(admin_user), db: Session = Depends(get_db)) -> MirrorsOut:
    """Replace the site's mirrors (admins): every new instance gets them."""
    settings = mirrors.put(db, None, **body.model_dump())
    shown = {k: v for k, v in asdict(settings).items() if v and k != "ca_bundle"}
    detail = ", ".join(f"{k}={v}" for k, v in shown.items()) + (", with a CA bundle" if settings.ca_bundle else "")
    audit.record(db, admin, "mirrors.site", "site", detail or "cleared")
    db.commit()  # before the answer: an instance created right after it must get them
    return _out(settings)
