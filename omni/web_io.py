"""Reading requests and writing responses: JSON bodies into model types, query
parameters, conditional-request headers, and JSON out. Every bad input becomes a
problem naming the field, here and nowhere else."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from omni import jsonbody
from omni.errors import (
    BadRequest,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
    UnsupportedMediaType,
)
from omni.ids import is_customer_id

T = TypeVar("T")
_ETAG = re.compile(r'^"(\d{1,19})"$')
_WHOLE = re.compile(r"\d{1,9}")

_encoder = msgspec.json.Encoder()


def json_response(
    data: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=_encoder.encode(data),
        status=status,
        content_type="application/json",
        headers=headers,
    )


async def read_json(request: web.Request, kind: type[T]) -> T:
    """Decode the body into `kind`: 415 unless JSON, 400 if malformed, 422 if invalid."""
    if request.content_type != "application/json" and not request.content_type.endswith("+json"):
        raise UnsupportedMediaType(
            f"send the body as application/json, not {request.content_type or 'nothing'}"
        )
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(
            f"the body is larger than the {request.client_max_size}-byte limit"
        ) from None
    return jsonbody.decode(body, kind)


def path_customer_id(request: web.Request) -> str:
    """The `{id}` of a customer route; 404 for anything that is not a customer id."""
    cid = request.match_info["id"]
    if not is_customer_id(cid):
        raise NotFound(f"no customer {cid}")
    return cid


def query_int(request: web.Request, name: str, *, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not _WHOLE.fullmatch(raw):
        raise BadRequest(f"{name} must be a whole number from {low} to {high}", field=name)
    value = int(raw)
    if not low <= value <= high:
        raise BadRequest(f"{name} must be from {low} to {high}, not {value}", field=name)
    return value


def query_str(request: web.Request, name: str, *, required: bool = False) -> str | None:
    value = request.query.get(name)
    if value is None or value == "":
        if required:
            raise BadRequest(f"the query parameter {name} is required", field=name)
        return None
    return value


def query_channel(request: web.Request, enabled: tuple[str, ...]) -> str | None:
    """`?channel=`: one of `enabled` ([channels] enabled), or None when not given; any
    other is 400 naming the parameter (the OpenAPI document lists the channels)."""
    channel = query_str(request, "channel")
    if channel is not None and channel not in enabled:
        raise BadRequest(f"unknown channel {channel!r}", field="channel")
    return channel


def etag(version: str) -> str:
    return f'"{version}"'


def if_match(request: web.Request) -> str | None:
    """The revision an If-Match names: None when absent, '' for `*` (any version).

    A weak tag or anything we never issued can never match, so it is 412 (RFC 9110).
    """
    raw = request.headers.get("If-Match")
    if raw is None:
        return None
    raw = raw.strip()
    if raw == "*":
        return ""
    match = _ETAG.match(raw)
    if not match:
        raise PreconditionFailed(f"If-Match {raw} is not a version this API issued")
    return match.group(1)


def not_modified(request: web.Request, tag: str) -> bool:
    """If-None-Match names this version (weak comparison, RFC 9110 13.1.2) or is `*`."""
    wanted = request.headers.get("If-None-Match")
    if wanted is None:  # most reads: no list of tags to make
        return False
    tags = [t.strip().removeprefix("W/") for t in wanted.split(",")]
    return "*" in tags or tag in tags
