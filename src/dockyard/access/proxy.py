"""Reverse proxy for HTTP and WebSocket traffic to a port of an instance's container."""

from __future__ import annotations

import asyncio

import httpx
import websockets
from fastapi import Request, WebSocket
from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect
from starlette.responses import Response, StreamingResponse
from websockets.asyncio.client import connect

from dockyard.services.sessions import COOKIE

# Headers that belong to one hop, never forwarded (RFC 9110 7.6.1), and ours.
_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
        "transfer-encoding", "upgrade", "host", "authorization"}


def _without_our_cookie(value: str) -> str:
    """The platform's session must not reach code running in the instance."""
    kept = [part for part in value.split(";") if part.strip() and not part.strip().startswith(COOKIE + "=")]
    return ";".join(kept)


def request_headers(headers, extra: dict[str, str]) -> dict[str, str]:
    out = {k: v for k, v in headers.items() if k.lower() not in _HOP}
    if "cookie" in out:
        out["cookie"] = _without_our_cookie(out["cookie"])
        if not out["cookie"]:
            del out["cookie"]
    out.update(extra)
    return out


async def forward_http(client: httpx.AsyncClient, request: Request, url: str, extra: dict[str, str]):
    # A body only when there is one: a GET must not go upstream as an empty chunked body.
    has_body = "content-length" in request.headers or "transfer-encoding" in request.headers
    upstream = client.build_request(
        request.method, url, params=request.query_params, headers=request_headers(request.headers, extra),
        content=request.stream() if has_body else None,
    )
    try:
        response = await client.send(upstream, stream=True)
    except ClientDisconnect:
        return Response(status_code=499)  # the caller left while sending its body
    except httpx.TransportError as exc:
        from fastapi.responses import JSONResponse

        return JSONResponse({"detail": f"the instance did not answer on this port: {type(exc).__name__}"},
                            status_code=502)
    headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in _HOP]
    proxied = StreamingResponse(response.aiter_raw(), status_code=response.status_code,
                                background=BackgroundTask(response.aclose))
    proxied.raw_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    return proxied


async def forward_websocket(websocket: WebSocket, url: str, extra: dict[str, str]) -> None:
    query = websocket.url.query
    headers = {k: v for k, v in request_headers(websocket.headers, extra).items()
               if k.lower() not in ("sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions",
                                    "sec-websocket-protocol", "origin")}
    protocols = [p.strip() for p in websocket.headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
    try:
        upstream = await connect(url + (f"?{query}" if query else ""), additional_headers=headers,
                                 subprotocols=protocols or None, max_size=None, open_timeout=10)
    except (OSError, websockets.exceptions.WebSocketException):
        await websocket.close(code=1011)
        return
    await websocket.accept(subprotocol=upstream.subprotocol)

    async def client_to_upstream():
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            await upstream.send(message.get("text") if message.get("text") is not None else message.get("bytes"))

    async def upstream_to_client():
        try:
            async for message in upstream:
                if isinstance(message, str):
                    await websocket.send_text(message)
                else:
                    await websocket.send_bytes(message)
        except Exception:  # the browser went away mid-message: nothing left to do
            return

    tasks = [asyncio.create_task(client_to_upstream()), asyncio.create_task(upstream_to_client())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await upstream.close()
        try:
            await websocket.close()
        except Exception:
            pass  # already closed by the client
