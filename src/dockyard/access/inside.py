"""The one thing instances may ask of the platform from inside: `POST /stop` with their
shutdown token (services/inside.py). A listener of its own, apart from the API and
console, so that the host firewall (runtimes/host_firewall.py) opens only this port to
instances: nothing else of the platform is reachable through it."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from dockyard.core.errors import DockyardError
from dockyard.services import inside
from dockyard.services.work import Driving
from dockyard.services.platform import Platform

log = logging.getLogger(__name__)
MAX_CONNECTIONS = 32  # at once; more are closed at once (one instance must not hold them all)
TIMEOUT_S = 10  # to send a request: a slow client loses its connection


class _Handler(BaseHTTPRequestHandler):
    server: "InsideServer"
    timeout = TIMEOUT_S
    server_version = "dockyard-inside"

    def _answer(self, status: int, detail: str) -> None:
        body = json.dumps({"detail": detail}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        if self.path != "/stop":
            return self._answer(404, "only POST /stop is served here")
        scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
        try:
            instance, stopped = inside.stop_from_inside(self.server.platform,
                                                        token.strip() if scheme == "Bearer" else "")
        except DockyardError as exc:
            return self._answer(exc.status_code, exc.message)
        if stopped:
            self.server.driver.kick(instance.id)
        self._answer(200, f"instance {instance.name} is stopping; its disks are kept")

    def do_GET(self) -> None:
        self._answer(405, "POST /stop with the instance's shutdown token")

    def log_message(self, format: str, *args) -> None:
        log.info("inside %s: " + format, self.client_address[0], *args)


class InsideServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, platform: Platform, driver: Driving):
        settings = platform.settings
        super().__init__((settings.inside_host, settings.inside_port), _Handler)
        self.platform, self.driver = platform, driver
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._thread = threading.Thread(target=self.serve_forever, name="inside", daemon=True)

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def start(platform: Platform, driver: Driving) -> InsideServer | None:
    """The listener, or None when it is turned off (port 0) or its port is taken: the
    platform runs on, without dockyard-shutdown."""
    if not platform.settings.inside_port:
        return None
    try:
        server = InsideServer(platform, driver)
    except OSError as exc:
        log.warning("dockyard-shutdown's listener on port %s did not start: %s", platform.settings.inside_port, exc)
        return None
    server.start()
    return server
