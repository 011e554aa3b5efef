"""`POST /v1/customers/{id}/merge`: an agent or admin makes two customers one (or, with
`"dry_run": true`, sees what that would make); `POST /v1/merges/{merge_id}/undo` splits
them again; `GET /v1/customers/{id}/audit`: who changed who is who."""

from __future__ import annotations

from typing import Annotated

import msgspec
from aiohttp import web
from msgspec import Meta

from omni.merge import announce, merge_customers
from omni.merge_preview import preview
from omni.state import SERVICES, STORE
from omni.unmerge import announce as announce_undo
from omni.unmerge import undo_merge
from omni.web_io import json_response, path_customer_id, query_int, query_str, read_json


class MergeRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    source: Annotated[str, Meta(min_length=1, max_length=64, description="the id to absorb")]
    dry_run: Annotated[
        bool, Meta(description="true: answer what the merge would make, write nothing")
    ] = False
    reason: (
        Annotated[
            str, Meta(min_length=1, max_length=512, description="why: the audit log's evidence")
        ]
        | None
    ) = None


async def merge(request: web.Request) -> web.Response:
    survivor = path_customer_id(request)
    body = await read_json(request, MergeRequest)
    store = request.app[STORE]
    if body.dry_run:
        return json_response(await preview(store, survivor, body.source))
    evidence = body.reason or "an agent found the two records are one person"
    result = await merge_customers(store, survivor, body.source, evidence=evidence)
    await announce(request.app[SERVICES].live, result)
    return json_response(result)


async def undo(request: web.Request) -> web.Response:
    result = await undo_merge(request.app[STORE], request.match_info["merge_id"])
    await announce_undo(request.app[SERVICES].live, result)
    return json_response(result)


async def audit(request: web.Request) -> web.Response:
    cid = path_customer_id(request)
    store = request.app[STORE]
    limit = query_int(request, "limit", default=50, low=1, high=200)
    before = query_str(request, "before")
    # The log outlives the record: an erased customer's log answers (with ids only).
    if not await store.audit.exists(cid):
        await store.customers.require(cid)
    return json_response(await store.audit.page(cid, limit=limit, before=before))
