"""The engine's refusals as the platform's errors, in one place: every APIError the
Docker runtime meets passes through `engine_error`."""

from __future__ import annotations

from docker.errors import APIError

from dockyard.runtimes.base import PortTaken, RuntimeError_

# How the engine words a published port that another process holds (its own proxy, or
# the kernel's bind): the one refusal the platform answers by itself, with another port.
PORT_TAKEN = ("address already in use", "port is already allocated")


def engine_error(exc: APIError) -> RuntimeError_:
    message = str(exc.explanation or exc)
    return (PortTaken if any(words in message for words in PORT_TAKEN) else RuntimeError_)(message)
