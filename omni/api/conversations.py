"""`GET /v1/conversations`: the team inbox, by status, oldest waiting first."""

from __future__ import annotations

from typing import get_args

from aiohttp import web

from omni.errors import ValidationFailed
from omni.model import Message
from omni.state import STORE
from omni.store.inbox import InboxStatus, decode_cursor
from omni.web_io import json_response, query_int, query_str

PAGE_DEFAULT = 50
PAGE_MAX = 200


async def inbox(request: web.Request) -> web.Response:
    store = request.app[STORE]
    status = query_str(request, "status") or "waiting"
    if status not in get_args(InboxStatus):
        raise ValidationFailed("status must be waiting, open or resolved", field="status")
    limit = query_int(request, "limit", default=PAGE_DEFAULT, low=1, high=PAGE_MAX)
    after = query_str(request, "after")

    async def last_message(cid: str) -> Message | None:
        page = await store.timeline.history(cid, limit=1, before=None, channel=None)
        return page.messages[0] if page.messages else None

    page = await store.inbox.page(
        status,  # type: ignore[arg-type]  # checked against InboxStatus above
        limit=limit,
        after=decode_cursor(after) if after else None,
        agent=query_str(request, "assignee") or None,
        channel=query_str(request, "channel") or None,
        read_last=last_message,
    )
    return json_response(page)
