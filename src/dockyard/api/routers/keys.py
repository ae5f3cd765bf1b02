from fastapi import APIRouter, Depends
from sqlalchemy.orm import Session

from dockyard.api.deps import current_user, get_db
from dockyard.api.schemas import KeyOut
from dockyard.core.inputs import KeyIn
from dockyard.db.models import User
from dockyard.services import keys

router = APIRouter(prefix="/keys", tags=["ssh keys"])


@router.get("", response_model=list[KeyOut])
def list_keys(user: User = Depends(current_user), db: Session = Depends(get_db)) -> list[KeyOut]:
    return [KeyOut.model_validate(k, from_attributes=True) for k in keys.list_keys(db, user)]


@router.post("", response_model=KeyOut, status_code=201)
def add_key(body: KeyIn, user: User = Depends(current_user), db: Session = Depends(get_db)) -> KeyOut:
    """Register a public key; it is installed in your instances at their next start."""
    return KeyOut.model_validate(keys.add_key(db, user, body.name, body.public_key), from_attributes=True)


@router.delete("/{name_or_fingerprint}", status_code=204)
def remove_key(name_or_fingerprint: str, user: User = Depends(current_user), db: Session = Depends(get_db)) -> None:
    keys.remove_key(db, user, name_or_fingerprint)
