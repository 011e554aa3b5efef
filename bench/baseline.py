"""The baseline: the least each job needs, on omni's stack (aiohttp, redis-py asyncio
with the same blocking pool, the same Redis), serving omni's paths so wrk sends both
the same request files.

    POST /v1/messages                    check the key, decode the body, then one
    POST /channels/instagram/webhook     MULTI/EXEC pipeline: XADD the body to the
                                         customer's stream and HSET a field of their hash
                                         (the webhook checks X-Hub-Signature-256 first)
    GET  /v1/customers/{id}/context      check the key, one pipeline: HGETALL the hash and
    GET  /v1/customers/{id}/history      XREVRANGE the newest 20 entries; answer JSON

Nothing is logged, no identity is resolved, nothing is de-duplicated: this is the
ceiling omni's ratios are measured against. Both reads are the read ceiling (hash and
20 entries), as the targets state them.

    python -m bench.baseline --port 8091 --redis unix:///path/valkey.sock [--reuse-port]
    python -m bench.baseline --port 8091 --redis redis://127.0.0.1:7000 --cluster

With --cluster it uses redis-py's cluster client (the same pool size per node): a
customer's hash and stream share a hash tag, so the MULTI/EXEC keeps to one slot.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from typing import Any, cast

import msgspec
from aiohttp import web
from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster

from bench.traffic import API_KEY, APP_SECRET
from omni.eventloop import EVENT_LOOPS, new_event_loop

RECENT = 20
REDIS = web.AppKey("redis", Redis)
_BEARER = f"Bearer {API_KEY}"
_SECRET = APP_SECRET.encode()
_json = msgspec.json.Encoder()


class _Ids(msgspec.Struct):
    id: str


class _Event(msgspec.Struct):
    sender: _Ids


class _Entry(msgspec.Struct):
    messaging: list[_Event]


class _Webhook(msgspec.Struct):
    entry: list[_Entry]


class _Inbound(msgspec.Struct):
    channel: str
    external_id: str


def stream_key(owner: str) -> str:
    return f"bl:{{{owner}}}:tl"


def hash_key(owner: str) -> str:
    return f"bl:{{{owner}}}:c"


def _authorized(request: web.Request) -> None:
    if request.headers.get("Authorization") != _BEARER:
        raise web.HTTPUnauthorized()


async def _append(redis: Redis, owner: str, body: bytes) -> bytes:
    async with redis.pipeline(transaction=True) as pipe:
        pipe.xadd(stream_key(owner), {"m": body})
        pipe.hset(hash_key(owner), "last_seen", int(time.time() * 1000))
        entry, _ = await pipe.execute()
    return bytes(entry)


async def ingest(request: web.Request) -> web.Response:
    _authorized(request)
    body = await request.read()
    inbound = msgspec.json.decode(body, type=_Inbound)
    entry = await _append(request.app[REDIS], f"{inbound.channel}:{inbound.external_id}", body)
    return web.Response(body=b'{"entry":"%s"}' % entry, status=201, content_type="application/json")


async def instagram(request: web.Request) -> web.Response:
    body = await request.read()
    digest = hmac.new(_SECRET, body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(f"sha256={digest}", request.headers.get("X-Hub-Signature-256", "")):
        raise web.HTTPUnauthorized()
    webhook = msgspec.json.decode(body, type=_Webhook)
    sender = webhook.entry[0].messaging[0].sender.id
    await _append(request.app[REDIS], f"instagram:{sender}", body)
    return web.Response(body=b'{"events":1}', content_type="application/json")


async def read(request: web.Request) -> web.Response:
    _authorized(request)
    owner = request.match_info["id"]
    async with request.app[REDIS].pipeline(transaction=False) as pipe:
        pipe.hgetall(hash_key(owner))
        pipe.xrevrange(stream_key(owner), count=RECENT)
        fields, entries = await pipe.execute()
    # The stored blobs are JSON already: joined, not decoded and encoded again.
    customer = _json.encode({k.decode(): v.decode() for k, v in fields.items()})
    recent = b",".join(entry[1][b"m"] for entry in entries)
    return web.Response(
        body=b'{"customer":%s,"recent":[%s]}' % (customer, recent),
        content_type="application/json",
    )


def create_app(
    redis_url: str, max_connections: int = 64, *, cluster: bool = False
) -> web.Application:
    async def redis(app: web.Application) -> AsyncIterator[None]:
        if cluster:
            nodes = RedisCluster.from_url(
                redis_url, max_connections=max_connections, socket_timeout=10
            )
            # The same commands: the handlers take it as a Redis, as omni does.
            app[REDIS] = cast(Redis, nodes)
            yield
            await nodes.aclose()
            return
        pool = BlockingConnectionPool.from_url(
            redis_url, max_connections=max_connections, timeout=5.0, socket_timeout=10
        )
        app[REDIS] = Redis(connection_pool=pool)
        yield
        await app[REDIS].aclose(close_connection_pool=True)

    app = web.Application()
    app.router.add_post("/v1/messages", ingest)
    app.router.add_post("/channels/instagram/webhook", instagram)
    app.router.add_get("/v1/customers/{id}/context", read)
    app.router.add_get("/v1/customers/{id}/history", read)
    app.router.add_get("/healthz", healthz)
    app.cleanup_ctx.append(redis)
    return app


async def healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok")


async def seed(redis: Redis, owners: list[str], messages: int, blob: bytes) -> None:
    """`messages` entries for each owner, so reads return full pages."""
    async with redis.pipeline(transaction=False) as pipe:
        for owner in owners:
            for _ in range(messages):
                pipe.xadd(stream_key(owner), {"m": blob})
            pipe.hset(hash_key(owner), mapping={"last_seen": int(time.time() * 1000)})
        await pipe.execute()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.baseline")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis", required=True)
    parser.add_argument("--reuse-port", action="store_true")
    parser.add_argument("--cluster", action="store_true", help="--redis is a cluster node")
    # The same loop as omni's (OMNI_SERVER_EVENT_LOOP): a ratio between two loops would
    # measure the loops.
    parser.add_argument("--loop", choices=EVENT_LOOPS, default="auto")
    args: Any = parser.parse_args(argv)
    web.run_app(
        create_app(args.redis, cluster=args.cluster),
        host="127.0.0.1",
        port=args.port,
        reuse_port=args.reuse_port,
        access_log=None,
        print=None,
        loop=new_event_loop(args.loop),
    )


if __name__ == "__main__":
    main()
