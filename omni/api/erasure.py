"""`DELETE /v1/customers/{id}` and `GET /v1/customers/{id}/export`: an admin erases, or
exports, everything omni holds about one customer (omni.erasure)."""

from __future__ import annotations

import contextlib

import structlog
from aiohttp import web

from omni.erasure import erase_customer, export_body, export_head
from omni.state import SERVICES, SETTINGS, STORE
from omni.web_io import path_customer_id

log = structlog.get_logger("omni.erasure")


async def erase(request: web.Request) -> web.Response:
    cid = path_customer_id(request)
    services = request.app[SERVICES]
    channels = request.app[SETTINGS].channels.enabled
    await erase_customer(request.app[STORE], services.outbox, services.live, cid, channels)
    return web.Response(status=204)


async def export(request: web.Request) -> web.StreamResponse:
    cid = path_customer_id(request)
    store = request.app[STORE]
    head = await export_head(store, cid)
    response = web.StreamResponse(
        headers={
            "Content-Disposition": f'attachment; filename="omni-export-{cid}.json"',
            "Cache-Control": "no-store",
        }
    )
    response.content_type = "application/json"
    await response.prepare(request)
    try:
        async for chunk in export_body(store, request.app[SERVICES].outbox, head):
            await response.write(chunk)
    except ConnectionError:
        return response  # the client went away
    except Exception:
        # The status line is sent: a problem document can no longer replace it. Cutting
        # the connection keeps the client from taking a partial document for a whole one.
        log.exception("export cut short", customer_id=cid)
        if request.transport is not None:
            with contextlib.suppress(Exception):
                request.transport.abort()
        return response
    await response.write_eof()
    return response
