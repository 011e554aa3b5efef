"""Operations: liveness, readiness, and the OpenAPI document."""

from __future__ import annotations

import asyncio

import redis.exceptions
from aiohttp import web

from omni.state import OPENAPI, REDIS
from omni.web_io import json_response


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    try:
        await asyncio.wait_for(request.app[REDIS].ping(), timeout=2)
    except (
        TimeoutError,
        OSError,
        redis.exceptions.RedisError,
        redis.exceptions.RedisClusterException,  # no node of the cluster answers
    ) as exc:
        return json_response(
            {"status": "unavailable", "redis": "unreachable", "reason": type(exc).__name__},
            status=503,
        )
    return json_response({"status": "ok", "redis": "ok"})


async def openapi(request: web.Request) -> web.Response:
    return json_response(request.app[OPENAPI])
