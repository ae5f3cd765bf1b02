"""The engine's refusals as the platform's errors, in one place: every APIError the
Docker runtime meets passes through `engine_error`, and the few refusals the runtime
answers by itself are recognised here, by how the engine words them."""

from __future__ import annotations

from docker.errors import APIError, NotFound

from dockyard.runtimes.base import PortTaken, RuntimeError_

# A published port that another process holds (its own proxy, or the kernel's bind).
PORT_TAKEN = ("address already in use", "port is already allocated")

GONE = "the container is gone"


def _message(exc: APIError) -> str:
    return str(exc.explanation or exc)


def engine_error(exc: APIError, doing: str = "", of_container: bool = False) -> RuntimeError_:
    """The platform's error for `exc`, its message after `doing` (what failed) where given;
    `of_container`: a 404 from a call about one container says that it is gone."""
    if of_container and isinstance(exc, NotFound):
        return RuntimeError_(GONE)
    message = _message(exc)
    kind = PortTaken if any(words in message for words in PORT_TAKEN) else RuntimeError_
    return kind(f"{doing}: {message}" if doing else message)


def network_missing(exc: APIError) -> bool:
    """A start refused because a network the container joins was removed behind its back."""
    message = _message(exc)
    return "network" in message and "not found" in message


def subnet_taken(exc: APIError) -> bool:
    """A network refused because another one on the engine took its subnet meanwhile."""
    return "overlap" in _message(exc)


def rlimit_refused(exc: APIError) -> bool:
    """A container refused the resource limits it was given (a rootless or nested engine)."""
    return "rlimit" in _message(exc)


def removal_in_progress(exc: APIError) -> bool:
    """A removal refused because another removal of the same container is under way."""
    return exc.status_code == 409 and "already in progress" in _message(exc)
