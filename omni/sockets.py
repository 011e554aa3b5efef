"""The server's open WebSockets, closed as it shuts down instead of it waiting out its
shutdown timeout for clients that never hang up. Any channel's socket registers here."""

from __future__ import annotations

from weakref import WeakSet

from aiohttp import WSCloseCode, web

SOCKETS = web.AppKey("client_sockets", WeakSet[web.WebSocketResponse])


def track_sockets(app: web.Application) -> None:
    """Keep the app's open sockets (call from `create_app`)."""
    sockets: WeakSet[web.WebSocketResponse] = WeakSet()
    app[SOCKETS] = sockets
    app.on_shutdown.append(_close_sockets)


async def _close_sockets(app: web.Application) -> None:
    sockets: WeakSet[web.WebSocketResponse] = app[SOCKETS]
    for ws in list(sockets):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")
