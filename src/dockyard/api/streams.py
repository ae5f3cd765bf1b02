"""Streaming a blocking source (a command's output, a container's log) to a client."""

from __future__ import annotations

from typing import AsyncGenerator, Iterable, Protocol

import anyio
import anyio.to_thread
from fastapi.concurrency import run_in_threadpool


class Closable(Iterable[bytes], Protocol):
    def close(self) -> None: ...


async def pumped(source: Closable) -> AsyncGenerator[bytes, None]:
    """The source's chunks, each read on a worker thread. A client that leaves cancels
    this generator: a read waiting on a silent source (a quiet log follow) is abandoned
    rather than waited for, and `close` then ends the source, which frees its thread."""
    chunks = iter(source)
    try:
        while (chunk := await anyio.to_thread.run_sync(next, chunks, None, abandon_on_cancel=True)) is not None:
            yield chunk
    finally:
        with anyio.CancelScope(shield=True):  # a cancelled scope would skip the close
            await run_in_threadpool(source.close)
