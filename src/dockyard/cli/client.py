"""The CLI's only way to Dockyard: its REST API, with the saved or given credentials."""

from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path

import httpx

from dockyard.core import autostop, idempotency
from dockyard.core.errors import InvalidInput

API = "/api/v1"


class CliError(Exception):
    """Shown to the user as one line, with a non-zero exit code."""


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "dockyard"


def credentials_path() -> Path:
    return config_dir() / "credentials.json"


def save_credentials(url: str, user: str, token: str) -> Path:
    path = credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # the token is a secret
    with os.fdopen(fd, "w") as handle:
        json.dump({"url": url, "user": user, "token": token}, handle)
    return path


def _saved() -> dict:
    try:
        return json.loads(credentials_path().read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def server_url(explicit: str | None = None) -> str:
    url = explicit or os.environ.get("DOCKYARD_URL") or _saved().get("url")
    if not url:
        raise CliError("no server: run `dockyard login --url URL --user NAME` or set DOCKYARD_URL")
    return url.rstrip("/")


class Client:
    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 660):
        self.url = server_url(url)
        self.token = token if token is not None else (os.environ.get("DOCKYARD_TOKEN") or _saved().get("token"))
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self.http = httpx.Client(base_url=self.url + API, headers=headers, timeout=timeout)

    def request(self, method: str, path: str, **kwargs) -> httpx.Response:
        # Retried once on a network error where that cannot do anything twice: reads,
        # releases, and the POSTs the server deduplicates by their key.
        retried = method.upper() in ("GET", "HEAD", "DELETE")
        if idempotency.covers(method, path):
            kwargs["headers"] = {**kwargs.get("headers", {}), idempotency.HEADER: uuid.uuid4().hex}
            retried = True
        for attempt in (1, 2):
            try:
                response = self.http.request(method, path, **kwargs)
                break
            except httpx.TransportError as exc:
                if attempt == 2 or not retried:
                    raise CliError(f"cannot reach Dockyard at {self.url}: {exc}") from None
        if response.status_code >= 400:
            raise CliError(_error_text(response))
        return response

    def get(self, path: str, **kwargs):
        return self.request("GET", path, **kwargs).json()

    def post(self, path: str, body: dict | None = None, **kwargs):
        return self.request("POST", path, json=body, **kwargs).json()

    def patch(self, path: str, body: dict, **kwargs):
        return self.request("PATCH", path, json=body, **kwargs).json()

    def delete(self, path: str, **kwargs):
        return self.request("DELETE", path, **kwargs).json()

    def stream(self, path: str, method: str = "GET", body: dict | None = None, **params):
        try:
            with self.http.stream(method, path, params=params, json=body, timeout=None) as response:
                if response.status_code >= 400:
                    response.read()
                    raise CliError(_error_text(response))
                yield from response.iter_bytes()
        except httpx.TransportError as exc:
            raise CliError(f"cannot reach Dockyard at {self.url}: {exc}") from None


def _error_text(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = response.text.strip()
    if response.status_code == 401:
        detail = f"{detail} (log in with `dockyard login`)"
    return str(detail or f"HTTP {response.status_code}")


def wait_for(client: Client, collection: str, key: str, statuses: list[str], timeout: float = 600) -> dict:
    """Block on the server until an instance or cluster reaches a status (long-poll)."""
    found = client.get(f"/{collection}/{key}", params={"wait_for": statuses, "timeout": timeout})
    if found["status"] not in statuses:
        raise CliError(f"{collection[:-1]} {found['name']} is still {found['status']} after {timeout:.0f}s")
    return found


def path_key(key: str) -> str:
    """An instance or cluster argument as a URL path names it: an admin's `user/name` as
    `user:name` (a path segment holds no "/"; services/ownership.py reads both)."""
    return key.replace("/", ":", 1)


def parse_minutes(value: str, option: str) -> int | None:
    """An auto-stop duration option: 30, 30m, 2h, 1h30m or off (core/autostop.py's rule)."""
    try:
        return autostop.parse_minutes(value, option)
    except InvalidInput as exc:
        raise CliError(exc.message) from None


def parse_seconds(value: str, option: str) -> float:
    """A duration such as 90, 30s, 10m or 2h, in seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", value)
    if not match or float(match[1]) <= 0:
        raise CliError(f"{option} {value!r}: use a positive duration such as 30s, 10m or 2h")
    return float(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600}[match[2]]


def forget_credentials(token: str) -> bool:
    """Remove the saved credentials if they hold `token`; True if they did."""
    if _saved().get("token") != token:
        return False
    credentials_path().unlink(missing_ok=True)
    return True


def parse_env(pairs: list[str], option: str = "--env") -> dict[str, str]:
    """NAME=VALUE options as a dict."""
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise CliError(f"{option} {pair.split('=')[0]!r}: use NAME=VALUE")
        env[key] = value
    return env
