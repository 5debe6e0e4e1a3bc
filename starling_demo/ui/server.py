"""How the app is served to many visitors: requests and uploads within limits, sessions kept lean, and who each
request comes from (its address, a trusted proxy's header, or an MCP caller's relayed address)."""
from __future__ import annotations

import asyncio
import ipaddress
from types import SimpleNamespace

import gradio as gr
import gradio.state_holder
from starlette.middleware import Middleware
from starlette.responses import JSONResponse

from ..limits import MAX_REQUEST_BYTES, MAX_SESSIONS, MAX_UPLOAD_BYTES

BODY_SECONDS = 30  # a request body that stalls this long is refused (408)


class RequestLimit:
    """Refuse a request body over MAX_REQUEST_BYTES before the app reads or parses it, counting the bytes that
    arrive (a chunked body, or one longer than its Content-Length, included), and a body that stalls for
    BODY_SECONDS: otherwise a 10 MB text costs the server its parsing before the app can say it is too long,
    and a promised body that never comes holds a connection for ever. Uploads have their own limit
    (`max_file_size`), counted by Gradio as they stream."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"].endswith("/upload") or scope["method"] in ("GET", "HEAD"):
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers", ())).get(b"content-length", b"0")
        if int(length or 0) > MAX_REQUEST_BYTES:
            return await too_large(int(length), scope, receive, send)
        messages, size = [], 0
        while True:  # the whole body, at most MAX_REQUEST_BYTES of it, before the app sees any
            try:
                message = await asyncio.wait_for(receive(), BODY_SECONDS)
            except TimeoutError:
                detail = f"The request's body did not arrive within {BODY_SECONDS} s: send it whole, then wait."
                return await JSONResponse({"detail": detail}, status_code=408)(scope, receive, send)
            messages.append(message)
            size += len(message.get("body", b""))
            if size > MAX_REQUEST_BYTES:
                return await too_large(size, scope, receive, send, at_least=True)
            if message["type"] != "http.request" or not message.get("more_body"):
                break

        async def replay():
            return messages.pop(0) if messages else await receive()

        return await self.app(scope, replay, send)


async def too_large(size: int, scope, receive, send, at_least: bool = False) -> None:
    detail = (f"The request has {'over ' if at_least else ''}{size / 2**20:.1f} MB; this server takes at most "
              f"{MAX_REQUEST_BYTES // 2**20} MB: shorten the texts (see README's limits).")
    await JSONResponse({"detail": detail}, status_code=413, headers={"connection": "close"})(scope, receive, send)


# Gradio's MCP server runs a tool by calling the app again from this machine, with the caller's headers: this one,
# set here on the MCP request itself, carries the caller's own address into that call, for the limits.
RELAYED_PEER = "x-starling-relayed-peer"


class RelayPeer:
    """Put the peer's address in RELAYED_PEER on a request to the MCP server, and drop that header from any request
    that does not come from this machine (a client cannot name its own address)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            peer = scope["client"][0] if scope.get("client") else "unknown"
            to_mcp, name = "/gradio_api/mcp" in scope["path"], RELAYED_PEER.encode()
            headers = [header for header in scope["headers"] if header[0] != name or (_loopback(peer) and not to_mcp)]
            scope = dict(scope, headers=headers + [(name, peer.encode())] if to_mcp else headers)
        return await self.app(scope, receive, send)


def server_kwargs() -> dict:
    """`launch()` arguments that limit uploads, refuse oversized requests and bound the sessions kept."""
    return {"max_file_size": MAX_UPLOAD_BYTES, "state_session_capacity": MAX_SESSIONS,
            "app_kwargs": {"middleware": [Middleware(RelayPeer), Middleware(RequestLimit)]}}


class LeanSessionState(gradio.state_holder.SessionState):
    """Gradio's state of one browser session without its copy of every block's config and of every input's and
    output's latest value, which only deep links read (`/gradio_api/deep_link`, for `gr.DeepLinkButton`; this app
    has none). The copy took 0.36 MiB a session before its first event, and 26 ms of the server's CPU to build:
    the sessions the server keeps (MAX_SESSIONS) held hundreds of MB of copies, and a client with new session ids
    cost that CPU for each (RESULTS.md, issue 26)."""

    def __init__(self, blocks: gr.Blocks):
        # Gradio builds the copy of the blocks it is given: none, here; the rest of the session as Gradio sets it.
        super().__init__(SimpleNamespace(default_config=blocks.default_config, blocks={}))

    def __setitem__(self, key: int, value) -> None:
        super().__setitem__(key, value)
        self.config_values.pop(key, None)

    def _update_config(self, key: int) -> None:
        pass

    def _update_value_in_config(self, key: int, value) -> None:
        pass


def lean_sessions() -> None:
    """Gradio's new sessions, in every app of this process, as `LeanSessionState`s (deep links then show nothing)."""
    gradio.state_holder.SessionState = LeanSessionState


def client_of(request, header: str | None = None) -> str:
    """Who sent `request` (a Starlette request), for the limits: the address it came from or, behind a proxy whose
    `header` (such as X-Forwarded-For) is trusted, the last public address in that header: the one the proxy facing
    the internet added (addresses to its left are the client's to choose; private ones to its right are the
    proxies' own hops); the last address if none is public. Session ids do not count: a client chooses them.

    >>> from types import SimpleNamespace as Request
    >>> sent = Request(client=Request(host="10.0.0.2"), headers={"x-forwarded-for": "6.6.6.6, 1.2.3.4, 10.1.2.3"})
    >>> client_of(sent), client_of(sent, "X-Forwarded-For")
    ('10.0.0.2', '1.2.3.4')
    """
    forwarded = [part.strip() for part in request.headers.get(header.lower(), "").split(",")] if header else []
    forwarded = [part for part in forwarded if part]
    if forwarded:
        return next((part for part in reversed(forwarded) if _public(part)), forwarded[-1])
    peer = request.client.host if getattr(request, "client", None) else "unknown"
    return request.headers.get(RELAYED_PEER) if relayed(request) else peer


def relayed(request) -> bool:
    """Whether `request` is Gradio's MCP server calling the app for an MCP caller (`RelayPeer`): one session for
    every caller, so only the caller's client limits apply."""
    peer = request.client.host if getattr(request, "client", None) else "unknown"
    return _loopback(peer) and bool(request.headers.get(RELAYED_PEER))


def _public(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_global
    except ValueError:
        return False


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False
