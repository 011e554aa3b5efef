"""Link tokens over HTTP: a bot asks for one for a customer; a bot (or a channel route)
redeems what the customer presented on another channel."""

from __future__ import annotations

from aiohttp import web

from omni.links import LinkTokenRequest, Redeem
from omni.state import SERVICES
from omni.web_io import json_response, path_customer_id, read_json


async def issue(request: web.Request) -> web.Response:
    cid = path_customer_id(request)
    body = await read_json(request, LinkTokenRequest)
    token = await request.app[SERVICES].links.issue(cid, body.channel)
    return json_response(token, status=201)


async def redeem(request: web.Request) -> web.Response:
    body = await read_json(request, Redeem)
    linked = await request.app[SERVICES].links.redeem(body)
    return json_response(linked)
