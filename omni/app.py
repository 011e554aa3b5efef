"""The application factory: `create_app(settings, channels)` wires routes, middleware and
the resources opened and closed with the app's lifecycle. It is the one place the core
meets the channels: it receives their registry (or loads the default one by name)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import structlog
from aiohttp import web

from omni import logs
from omni.auth import API_KEYS
from omni.channel import Channel, load, validate
from omni.middleware import ParserLog, request_middleware
from omni.openapi import build
from omni.overload import LOAD, Load, in_flight_limit
from omni.ratelimit import LIMITER, RateLimiter
from omni.redis_client import close, connect
from omni.redis_server import EmbeddedRedis
from omni.replica_acks import ReplicaAcks
from omni.reports import read_settings as report_settings
from omni.routes import add_routes, all_routes
from omni.services import open_services
from omni.settings import Settings, inbox_shards
from omni.sockets import track_sockets
from omni.state import CHANNELS, EMBEDDED, OPENAPI, REDIS, SERVICES, SETTINGS, STORE
from omni.store import Store
from omni.survey_settings import read_settings as survey_settings
from omni.worker import Worker

log = structlog.get_logger("omni.app")


async def _redis(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    url = settings.redis.url
    embedded = None
    supervisor: asyncio.Task[None] | None = None
    if not url:
        embedded = EmbeddedRedis(
            settings.redis.data_dir, fsync=settings.redis.fsync, owner_port=settings.server.port
        )
        await asyncio.to_thread(embedded.start)
        app[EMBEDDED] = embedded
        url = embedded.url
        log.info("embedded redis started", data_dir=str(embedded.data_dir), pid=embedded.pid)
        supervisor = asyncio.create_task(embedded.supervise(), name="omni-redis-supervisor")

    client = connect(settings.redis, url, socket_timeout=settings.redis.request_timeout)
    # The hot paths' pipeliner bounds each pipeline with one deadline instead of a timer
    # for every reply (omni.scripts.Pipeliner): its client has no socket timeout.
    pipelined = connect(settings.redis, url, socket_timeout=None)
    app[REDIS] = client
    replicas = settings.redis.replica_acks
    acks = (
        ReplicaAcks(
            client,
            replicas,
            settings.redis.replica_ack_timeout_ms,
            deadline_s=settings.redis.request_timeout,
        )
        if replicas
        else None
    )
    app[STORE] = Store(
        client,
        pipelined=pipelined,
        timeout_s=settings.redis.request_timeout,
        inbox_shards=inbox_shards(settings),
        acks=acks,
        stats_parts=settings.redis.parts,
    )
    app[LIMITER] = RateLimiter(
        client, app[STORE].pipeliner, settings.limits, parts=settings.redis.parts
    )
    try:
        yield
    finally:
        await close(client)
        await close(pipelined)
        if supervisor is not None:
            supervisor.cancel()
            await asyncio.gather(supervisor, return_exceptions=True)
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
            log.info("embedded redis stopped")


async def _services(app: web.Application) -> AsyncIterator[None]:
    """The outbox, live events and channel adapters; with `in_process_worker`, a worker
    in this process too, so `omni serve` alone delivers replies and bot webhooks."""
    settings = app[SETTINGS]
    channels: tuple[Channel, ...] = app[CHANNELS]
    async with open_services(settings, app[REDIS], app[STORE], channels) as services:
        app[SERVICES] = services
        tasks = [asyncio.create_task(services.live.run(), name="omni-live")]
        stop = asyncio.Event()
        # Every serve process sweeps overdue agent replies back to the queue; the
        # script moves each conversation once, however many sweep at the same time.
        sweep = asyncio.create_task(services.handoffs.run(stop), name="omni-handoff-sweep")
        if settings.in_process_worker:
            worker = Worker(app[REDIS], services.handlers, config=settings.outbox)
            tasks.append(asyncio.create_task(worker.run(stop), name="omni-worker"))
        try:
            yield
        finally:
            stop.set()
            live, workers = tasks[0], tasks[1:]
            live.cancel()
            # The worker finishes the round in progress; what it cannot finish in
            # time stays unacked in the stream for the next worker to take over.
            if workers:
                _, pending = await asyncio.wait(workers, timeout=settings.server.shutdown_timeout)
                for task in pending:
                    task.cancel()
            # Bounded: a subscription stuck on a dead connection must not hold up exit.
            background = [*tasks, sweep]
            _, pending = await asyncio.wait(background, timeout=2)
            for task in pending:
                task.cancel()  # again: a cancellation can be lost inside a client library
            if pending:
                _, stuck = await asyncio.wait(pending, timeout=2)
                for task in stuck:
                    log.warning("background task did not stop", task=task.get_name())
            await asyncio.gather(*(t for t in background if t.done()), return_exceptions=True)


def create_app(
    settings: Settings,
    channels: Sequence[Channel] | None = None,
    *,
    request_line: logs.RequestLine = logs.request_line,
) -> web.Application:
    """`channels`: the channel registry; without it, the default one loaded by name
    (`omni.channel.REGISTRY`). A bad channel setting raises `ConfigError` here.
    `request_line`: how each request's line is written (`omni.logs.configure`'s)."""
    listed: tuple[Channel, ...] = load() if channels is None else tuple(channels)
    validate(settings, listed)
    survey_settings(settings), report_settings(settings)  # a bad one stops here, named
    load_now = Load(settings.limits.max_in_flight)
    app = web.Application(
        middlewares=[request_middleware(request_line), in_flight_limit(load_now)],
        client_max_size=settings.limits.body_max,
        handler_args={"logger": ParserLog("aiohttp.server")},
    )
    app[LOAD] = load_now
    app[SETTINGS] = settings
    app[API_KEYS] = settings.api_keys
    app[CHANNELS] = listed
    app[OPENAPI] = build(all_routes(listed), settings.channels.enabled)
    add_routes(app, listed)
    app.cleanup_ctx.append(_redis)
    app.cleanup_ctx.append(_services)
    track_sockets(app)
    return app
