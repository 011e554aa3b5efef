"""Link tokens over HTTP: a bot asks for one for a customer; a bot (or a channel route)
redeems what the customer presented on another channel."""

from __future__ import annotations

from aiohttp import web

from omni.errors import NotFound
from omni.ids import is_customer_id
from omni.links import LinkTokenRequest, Redeem
from omni.state import SERVICES
from omni.web_io import json_response, read_json


async def issue(request: web.Request) -> web.Response:
    cid = request.match_info["id"]
    if not is_customer_id(cid):
        raise NotFound(f"no customer {cid}")
    body = await read_json(request, LinkTokenRequest)
    token = await request.app[SERVICES].links.issue(cid, body.channel)
    return json_response(token, status=201)


async def redeem(request: web.Request) -> web.Response:
    body = await read_json(request, Redeem)
    services = request.app[SERVICES]
    linked = await services.links.redeem(body)
    await services.live.publish(linked.customer_id, "identity.linked", {
        "channel": linked.channel, "external_id": linked.external_id,
        "merged_from": linked.merged_from,
    })  # fmt: skip
    return json_response(linked)
