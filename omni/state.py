"""Typed keys for what the application holds; resources are opened in `omni.app`."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from redis.asyncio import Redis

from omni.channel import Channel
from omni.redis_server import EmbeddedRedis
from omni.services import Services
from omni.settings import Settings
from omni.store import Store

SETTINGS = web.AppKey("settings", Settings)
REDIS = web.AppKey("redis", Redis)
STORE = web.AppKey("store", Store)
OPENAPI = web.AppKey("openapi", dict[str, Any])  # the document served at /openapi.json
CHANNELS = web.AppKey("channels", tuple[Channel, ...])  # the registry the app was built with
SERVICES = web.AppKey("services", Services)  # outbox, live events, inbox, replies, adapters
EMBEDDED = web.AppKey("embedded_redis", EmbeddedRedis)  # only when omni runs its own
