"""`POST /v1/customers/{id}/merge`: an agent or admin makes two customers one."""

from __future__ import annotations

from typing import Annotated

import msgspec
from aiohttp import web
from msgspec import Meta

from omni.merge import announce, merge_customers
from omni.state import SERVICES, STORE
from omni.web_io import json_response, path_customer_id, read_json


class MergeRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    source: Annotated[str, Meta(min_length=1, max_length=64, description="the id to absorb")]


async def merge(request: web.Request) -> web.Response:
    survivor = path_customer_id(request)
    body = await read_json(request, MergeRequest)
    result = await merge_customers(request.app[STORE], survivor, body.source)
    await announce(request.app[SERVICES].live, result)
    return json_response(result)
