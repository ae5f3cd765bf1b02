"""Streaming a blocking source (a command's output, a container's log) to a client."""

from __future__ import annotations

from typing import AsyncIterator, Iterable, Protocol

from fastapi.concurrency import run_in_threadpool


class Closable(Iterable[bytes], Protocol):
    def close(self) -> None: ...


async def pumped(source: Closable) -> AsyncIterator[bytes]:
    """The source's chunks, each read on a worker thread. A client that leaves cancels
    this generator, and `close` then ends the source (which frees the thread reading it)."""
    chunks = iter(source)
    try:
        while (chunk := await run_in_threadpool(next, chunks, None)) is not None:
            yield chunk
    finally:
        await run_in_threadpool(source.close)
