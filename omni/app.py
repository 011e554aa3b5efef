"""The application factory: `create_app(settings)` wires routes, middleware and the
resources opened and closed with the app's lifecycle."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import structlog
from aiohttp import web
from redis.asyncio import BlockingConnectionPool, Redis

from omni.auth import API_KEYS
from omni.middleware import request_middleware
from omni.openapi import build
from omni.redis_server import EmbeddedRedis
from omni.routes import ROUTES, add_routes
from omni.settings import Settings
from omni.state import OPENAPI, REDIS, SETTINGS, STORE
from omni.store import Store

log = structlog.get_logger("omni.app")
EMBEDDED = web.AppKey("embedded_redis", EmbeddedRedis)


async def _redis(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    url = settings.redis.url
    embedded = None
    if not url:
        embedded = EmbeddedRedis(settings.redis.data_dir)
        await asyncio.to_thread(embedded.start)
        app[EMBEDDED] = embedded
        url = embedded.url
        log.info("embedded redis started", data_dir=str(embedded.data_dir), pid=embedded.pid)
    # A blocking pool makes a burst of requests wait for a connection instead of
    # failing with "Too many connections" the moment the pool is exhausted.
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=settings.redis.max_connections,
        timeout=settings.redis.pool_timeout,
        socket_connect_timeout=2,
        socket_timeout=10,
    )
    client = Redis(connection_pool=pool)
    app[REDIS] = client
    app[STORE] = Store(client)
    try:
        yield
    finally:
        await client.aclose()
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
            log.info("embedded redis stopped")


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        middlewares=[request_middleware], client_max_size=settings.limits.body_max
    )
    app[SETTINGS] = settings
    app[API_KEYS] = settings.api_keys
    app[OPENAPI] = build(ROUTES)
    add_routes(app)
    app.cleanup_ctx.append(_redis)
    return app
