"""Password sign-ins, for the API and the console alike: failures limited per account and
per client address, a cap on argon2 hashes computed at once, and the same work (a hash)
for a user name that does not exist as for a wrong password, so timing tells nothing."""

from __future__ import annotations

import math
import threading

from sqlalchemy.orm import Session

from dockyard.config import Settings
from dockyard.core.errors import TooManyRequests, Unauthorized
from dockyard.core.limits import FailureWindow
from dockyard.db.models import User
from dockyard.services import users

HASH_WAIT_S = 10.0


class LoginGuard:
    def __init__(self, settings: Settings):
        window = settings.login_window_s
        self._by_account = FailureWindow(settings.login_failures_per_account, window)
        self._by_address = FailureWindow(settings.login_failures_per_address, window)
        self._lock = threading.Lock()
        self._hashing = threading.BoundedSemaphore(settings.login_concurrent_hashes)

    def check(self, db: Session, name: str, password: str, address: str) -> User:
        """The user, or 401 (wrong name or password) or 429 (too many failures, or too
        many sign-ins being checked at once)."""
        with self._lock:
            wait = max(self._by_account.retry_after(name), self._by_address.retry_after(address))
        if wait:
            raise TooManyRequests(f"too many failed sign-ins; try again in {math.ceil(wait)} s")
        if not self._hashing.acquire(timeout=HASH_WAIT_S):
            raise TooManyRequests("too many sign-ins at once; try again in a few seconds")
        try:
            user = users.check_password(db, name, password)
        except Unauthorized:
            with self._lock:
                self._by_account.record(name)
                self._by_address.record(address)
            raise
        finally:
            self._hashing.release()
        with self._lock:
            self._by_account.forget(name)  # only the right password clears an account
        return user
