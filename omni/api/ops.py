"""Operations: liveness, readiness, and the OpenAPI document."""

from __future__ import annotations

import asyncio

import redis.exceptions
from aiohttp import web

from omni.middleware import RETRY_AFTER_S
from omni.state import OPENAPI, REDIS, SETTINGS
from omni.web_io import json_response


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    try:
        timeout = request.app[SETTINGS].redis.request_timeout
        await asyncio.wait_for(request.app[REDIS].ping(), timeout=timeout)
    except (
        TimeoutError,
        OSError,
        redis.exceptions.RedisError,
        redis.exceptions.RedisClusterException,  # no node of the cluster answers
    ) as exc:
        response = json_response(
            {"status": "unavailable", "redis": "unreachable", "reason": type(exc).__name__},
            status=503,
        )
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
        return response
    return json_response({"status": "ok", "redis": "ok"})


async def openapi(request: web.Request) -> web.Response:
    return json_response(request.app[OPENAPI])
