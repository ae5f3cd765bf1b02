"""api/streams.pumped: a client that leaves a silent stream frees its reader."""

import threading

import anyio

from dockyard.api.streams import pumped


class Silent:
    """A source that sends one chunk, then blocks (a quiet log follow) until closed."""

    def __init__(self):
        self.closed = threading.Event()
        self.reader_done = threading.Event()

    def __iter__(self):
        try:
            yield b"first"
            self.closed.wait(30)
        finally:
            self.reader_done.set()

    def close(self):
        self.closed.set()


def test_a_client_leaving_a_silent_stream_closes_it_and_frees_the_thread():
    source = Silent()

    async def client_leaves():
        with anyio.fail_after(5):
            stream = pumped(source)
            with anyio.move_on_after(0.5):  # the client goes while the source is silent
                async for _ in stream:
                    pass
            await stream.aclose()

    anyio.run(client_leaves)
    assert source.closed.is_set()
    assert source.reader_done.wait(5)  # the blocked read ended: no thread is left behind
