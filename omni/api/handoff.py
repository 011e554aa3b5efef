"""Who answers the customer: `POST /v1/customers/{id}/handoff` (to an agent, the agents'
queue, or back to the bot) and `POST /v1/customers/{id}/resolve`; see `omni.handoff`."""

from __future__ import annotations

from aiohttp import web

from omni.auth import author
from omni.errors import Forbidden, ValidationFailed
from omni.handoff import Target
from omni.model import Author, HandoffRequest, ResolveRequest
from omni.state import SERVICES, STORE
from omni.web_io import json_response, path_customer_id, read_json


def _target(body: HandoffRequest, by: Author) -> tuple[Target, str | None]:
    if body.to == "bot":
        if by.kind == "bot":
            raise Forbidden("a bot may ask for an agent; only an agent hands a conversation back")
        if body.agent_id is not None:
            raise ValidationFailed("agent_id goes with to: agent", field="agent_id")
        return "bot", None
    agent_id = body.agent_id or (by.id if by.kind == "agent" else None)
    return ("agent", agent_id) if agent_id else ("queue", None)


async def handoff(request: web.Request) -> web.Response:
    cid = path_customer_id(request)
    body = await read_json(request, HandoffRequest)
    by = author(request)
    to, agent_id = _target(body, by)
    await request.app[SERVICES].handoffs.assign(
        cid, to, agent_id=agent_id, reason=body.reason, by=by
    )
    context = await request.app[STORE].contexts.read(cid)
    return json_response(context.conversation)


async def resolve(request: web.Request) -> web.Response:
    cid = path_customer_id(request)
    body = await read_json(request, ResolveRequest)
    resolved = await request.app[SERVICES].handoffs.resolve(cid, author(request), body.reason)
    context = await request.app[STORE].contexts.read(cid)
    headers = {} if resolved else {"Idempotent-Replayed": "true"}
    return json_response(context.conversation, headers=headers)
