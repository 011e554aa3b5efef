"""`GET /metrics`: the Prometheus exposition (`omni.metrics`)."""

from __future__ import annotations

from aiohttp import web

from omni import metrics
from omni.overload import LOAD
from omni.state import EMBEDDED, REDIS, SERVICES


async def exposition(request: web.Request) -> web.Response:
    live = request.app[SERVICES].live
    load = request.app[LOAD]
    embedded = request.app.get(EMBEDDED)
    # The delivery queue, service-wide: what tells whether there are workers enough.
    backlog = await request.app[SERVICES].outbox.backlog()
    process = (
        ("omni_requests_in_flight", "gauge", "Requests in progress", load.current),
        ("omni_requests_shed_total", "counter",
         "Requests shed with 503 at [limits] max_in_flight", load.shed_total),
        ("omni_outbox_waiting", "gauge",
         "Deliveries queued and not yet taken by a worker", backlog.waiting),
        ("omni_outbox_in_flight", "gauge",
         "Deliveries a worker has taken and not finished", backlog.in_flight),
        ("omni_outbox_delayed", "gauge",
         "Deliveries waiting for a retry after a failed attempt", backlog.delayed),
        ("omni_outbox_dead", "gauge", "Deliveries in the dead letters", backlog.dead),
        ("omni_live_listeners", "gauge", "Open live-event listeners", live.listeners),
        ("omni_live_listeners_dropped_total", "counter",
         "Live-event listeners dropped for falling behind", live.dropped_total),
        ("omni_redis_restarts_total", "counter",
         "Restarts of the embedded Redis after it exited (killed or crashed)",
         embedded.restarts if embedded is not None else 0),
    )  # fmt: skip
    text = await metrics.render(request.app[REDIS], process, live.parts)
    headers = {"Content-Type": metrics.CONTENT_TYPE, "Cache-Control": "no-store"}
    return web.Response(body=text.encode(), headers=headers)
