"""Sending to a customer, and the deliveries behind it: `POST /v1/customers/{id}/messages`
(a bot's or an agent's reply), a customer's delivery records, and the dead letters an
agent can look at and send again."""

from __future__ import annotations

import re

import msgspec
from aiohttp import web

from omni.api.messages import check_channel
from omni.auth import author
from omni.errors import BadRequest, NotFound
from omni.model import OutboundRequest, TypingRequest
from omni.outbox import DeadLetter, DeliveryStatus
from omni.state import SERVICES, STORE
from omni.web_io import json_response, path_customer_id, query_int, query_str, read_json

DEAD_PAGE_MAX = 200
# A dead letter's entry id: a stream id, then ".<queue>" with several queues (omni.outbox).
ENTRY_ID = r"\d{1,20}-\d{1,20}(\.\d{1,4})?"
_ENTRY_ID = re.compile(ENTRY_ID)


class DeadLetterPage(msgspec.Struct, frozen=True):
    items: list[DeadLetter]
    next_after: str | None  # pass as `after` for the next page; null on the last one


class DeliveryList(msgspec.Struct, frozen=True):
    items: list[DeliveryStatus]


async def send(request: web.Request) -> web.Response:
    cid = path_customer_id(request)
    body = await read_json(request, OutboundRequest)
    if body.channel is not None:
        check_channel(request, body.channel)
    message, created = await request.app[SERVICES].replies.send(cid, body, author(request))
    headers = {"Location": f"/v1/customers/{cid}/history"}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    # 202: stored and queued; the delivery status in the history says how it went.
    return json_response(message, status=202 if created else 200, headers=headers)


async def typing(request: web.Request) -> web.Response:
    """Tell the customer's chats that a bot or an agent is writing (or stopped): live
    only (a live event, not a message in the history); the widget and the app show it
    until the reply or a stop."""
    cid = path_customer_id(request)
    body = await read_json(request, TypingRequest)
    if body.channel is not None:
        check_channel(request, body.channel)
    await request.app[STORE].parts.revision(cid)  # 404 for a customer that does not exist
    event = {"channel": body.channel, "from": author(request).kind, "state": body.state}
    await request.app[SERVICES].live.publish(cid, "typing", event)
    return web.Response(status=204)


async def deliveries(request: web.Request) -> web.Response:
    cid = path_customer_id(request)
    limit = query_int(request, "limit", default=50, low=1, high=DEAD_PAGE_MAX)
    await request.app[STORE].contexts.read(cid)  # 404 for a customer that does not exist
    items = await request.app[SERVICES].outbox.deliveries(cid, limit)
    return json_response(DeliveryList(items=items))


async def dead_letters(request: web.Request) -> web.Response:
    limit = query_int(request, "limit", default=50, low=1, high=DEAD_PAGE_MAX)
    after = query_str(request, "after")
    if after is not None and not _ENTRY_ID.fullmatch(after):
        raise BadRequest("after must be the next_after of the previous page", field="after")
    items = await request.app[SERVICES].outbox.dead_letters(limit=limit, after=after)
    next_after = items[-1].entry_id if len(items) == limit else None
    return json_response(DeadLetterPage(items=items, next_after=next_after))


async def retry(request: web.Request) -> web.Response:
    delivery_id = request.match_info["delivery_id"]
    services = request.app[SERVICES]
    if not await services.outbox.requeue(delivery_id):
        raise NotFound(f"no dead letter {delivery_id}")
    return json_response({"id": delivery_id, "state": "queued"}, status=202)
