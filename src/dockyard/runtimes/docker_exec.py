"""Commands run in a container with a deadline and a cap on their output.

Docker's exec API has neither: `exec_run` keeps all the output in memory and waits for
the command however long it runs. Here the command runs under the tools volume's `run`
wrapper, which announces its pid; the output is read off the raw socket frame by frame
with a deadline; and when the deadline passes, the cap is reached or the reader is
closed (a client that left), `end` kills the command and what it started.
"""

from __future__ import annotations

import logging
import select
import socket
import struct
import time
from typing import Iterator

from docker.errors import APIError

from dockyard.runtimes import docker_tools
from dockyard.runtimes.docker_errors import engine_error

log = logging.getLogger(__name__)
_HEADER = struct.Struct(">BxxxL")  # stream (1 stdout, 2 stderr), length
_CHUNK = 64 * 1024


class BoundedExec:
    """One command's output as an iterator of chunks (stdout and stderr interleaved).

    After the iterator ends: `exit_code` (None when the command was stopped),
    `timed_out` and `truncated` say why it ended early.
    """

    def __init__(self, client, container_id: str, command: list[str], timeout_s: float, max_bytes: int,
                 environment: list[str] | None = None):
        self.client, self.container_id = client, container_id
        self.deadline = time.monotonic() + timeout_s
        self.max_bytes = max_bytes
        self.sent = 0
        self.exit_code: int | None = None
        self.timed_out = self.truncated = False
        self._pid: int | None = None
        self._finished = False
        self._reading = False  # a thread is in __iter__: it closes the socket when it leaves
        try:
            self._exec_id = client.api.exec_create(
                container_id, [docker_tools.RUN, *command], stdout=True, stderr=True, stdin=False, tty=False,
                environment=environment)["Id"]
            response = client.api.exec_start(self._exec_id, socket=True)
        except APIError as exc:
            raise engine_error(exc, of_container=True) from exc
        self._response = response
        self._sock: socket.socket = getattr(response, "_sock", response)
        self._buffer = b""
        self._pending_pid = b""

    # -- reading -------------------------------------------------------------------------

    def _recv(self, wanted: int) -> bytes | None:
        """At least one byte and at most `wanted` (b"" at the end), None past the deadline."""
        while True:
            if self._finished:  # closed from another thread: a client that left
                return b""
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                # In slices of a second, so a close from another thread is seen soon.
                readable, _, _ = select.select([self._sock], [], [], min(remaining, 1.0))
                if readable:
                    return self._sock.recv(wanted)
            except (BlockingIOError, InterruptedError):
                continue
            except (OSError, ValueError):  # closed under us
                return b""

    def _read_exact(self, size: int) -> bytes | None:
        while len(self._buffer) < size:
            data = self._recv(max(size - len(self._buffer), _CHUNK))
            if data is None:
                return None
            if not data:
                return b""
            self._buffer += data
        out, self._buffer = self._buffer[:size], self._buffer[size:]
        return out

    def _frames(self) -> Iterator[bytes]:
        while True:
            header = self._read_exact(_HEADER.size)
            if header is None:
                self.timed_out = True
                return
            if not header:
                return
            _, length = _HEADER.unpack(header)
            while length:
                data = self._read_exact(min(length, _CHUNK))
                if data is None:
                    self.timed_out = True
                    return
                if not data:
                    return
                length -= len(data)
                yield data

    def __iter__(self) -> Iterator[bytes]:
        self._reading = True
        try:
            for data in self._frames():
                if self._pid is None:
                    data = self._take_pid(data)
                    if not data:
                        continue
                room = self.max_bytes - self.sent
                if len(data) >= room:
                    self.truncated = len(data) > room
                    if room:
                        self.sent += room
                        yield data[:room]
                    if self.truncated:
                        return
                    continue
                self.sent += len(data)
                yield data
        finally:
            self._reading = False
            self.close()

    def _take_pid(self, data: bytes) -> bytes:
        """The wrapper's first line is the command's pid; the rest is the command's."""
        self._pending_pid += data
        line, newline, rest = self._pending_pid.partition(b"\n")
        if not newline:
            if len(self._pending_pid) > 32:  # not our wrapper: the tools volume is missing
                self._pid, rest = 0, self._pending_pid
                return rest
            return b""
        self._pid = int(line) if line.strip().isdigit() else 0
        return rest

    def read_all(self) -> bytes:
        return b"".join(self)

    # -- ending --------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the command if it still runs, and learn its exit code if it ended."""
        try:
            self._end()
        finally:
            if not self._reading:
                self._close_socket()

    def _end(self) -> None:
        if self._finished:
            return
        self._finished = True
        # A reader on another thread is woken (its recv sees the end) but its socket stays
        # open until it leaves: closed under it, the number could be reused by another
        # connection, and the reader would read that one's bytes.
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            state = self.client.api.exec_inspect(self._exec_id)
        except APIError:
            return
        if not state.get("Running"):
            self.exit_code = state.get("ExitCode")
            return
        if self._pid:
            end(self.client, self.container_id, self._pid)

    def _close_socket(self) -> None:
        try:
            self._sock.close()
        except OSError:
            pass


def end(client, container_id: str, pid: int) -> None:
    """Kill a command that `run` announced, and its descendants."""
    try:
        exec_id = client.api.exec_create(container_id, [docker_tools.END, str(pid)], stdout=False, stderr=False)["Id"]
        client.api.exec_start(exec_id, detach=True)
    except APIError as exc:  # the container stopped: so did the command
        log.debug("could not end pid %s in %s: %s", pid, container_id[:12], exc)
