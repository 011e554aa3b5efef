"""Load shedding: at most `[limits] max_in_flight` requests are handled at once by one
process; the next ones are answered at once with a 503 problem and Retry-After (the
request middleware writes it) instead of queueing without bound, where every waiting
request holds memory and its client's patience and then times out anyway.

Not counted: liveness, readiness and metrics (an operator must see an overloaded
process), and the long-lived streams (WebSocket upgrades, the agents' event streams),
which stay open for a session's lifetime. `/metrics` shows the count and the sheds
(omni_requests_in_flight, omni_requests_shed_total).
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Middleware

from omni.auth import Handler
from omni.errors import Unavailable

_EXEMPT = frozenset({"/healthz", "/readyz", "/metrics"})


@dataclass
class Load:
    """This process's requests in progress, and how many were shed."""

    limit: int
    current: int = 0
    shed_total: int = 0


LOAD = web.AppKey("load", Load)


def in_flight_limit(load: Load) -> Middleware:
    """A middleware that lets `load.limit` requests in at a time and sheds the rest."""

    @web.middleware
    async def shed(request: web.Request, handler: Handler) -> web.StreamResponse:
        if _exempt(request):
            return await handler(request)
        if load.current >= load.limit:
            load.shed_total += 1
            raise Unavailable(f"omni is handling {load.limit} requests already; retry shortly")
        load.current += 1
        try:
            return await handler(request)
        finally:
            load.current -= 1

    return shed


def _exempt(request: web.Request) -> bool:
    path = request.path
    return (
        path in _EXEMPT
        or path.endswith("/events")  # /v1/events, /v1/customers/{id}/events: streams
        or request.headers.get("Upgrade", "").lower() == "websocket"
    )
