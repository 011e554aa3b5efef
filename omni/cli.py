"""The `omni` command: the only place that reads the environment and runs a server."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from dataclasses import replace

import aiohttp
import structlog
from aiohttp import web
from redis.asyncio import Redis

from omni.app import create_app
from omni.channel import Channel, load, validate
from omni.demo import DemoError, play
from omni.devkeys import refusal
from omni.errors import ConfigError
from omni.logs import configure
from omni.migrations import PhoneMigration, migrate_phones
from omni.redis_server import EmbeddedRedis
from omni.services import open_services
from omni.settings import Settings, inbox_shards
from omni.store import Store
from omni.worker import Worker


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="omni", description="omnichannel conversation continuity")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the HTTP API")
    serve.add_argument("--host", help="bind address (default: server.host)")
    serve.add_argument("--port", type=int, help="port (default: server.port)")
    serve.add_argument(
        "--reuse-port",
        action="store_true",
        help="share the port with other `omni serve` processes (SO_REUSEPORT): the kernel "
        "spreads connections over them, one process per core",
    )
    demo = commands.add_parser(
        "demo", help="play the acceptance story against a running omni (make run)"
    )
    demo.add_argument("--url", help="omni's address (default: http://<server.host>:<server.port>)")
    commands.add_parser("worker", help="deliver queued replies and bot webhooks (needs redis.url)")
    commands.add_parser(
        "migrate",
        help="bring stored data up to this version (phone numbers to E.164); idempotent, "
        "safe while omni serves on a shared redis.url",
    )
    return parser


async def _migrate_with(settings: Settings, url: str) -> PhoneMigration:
    redis = Redis.from_url(url, socket_connect_timeout=2, socket_timeout=30)
    try:
        return await migrate_phones(Store(redis), settings.identity.default_region or None)
    finally:
        await redis.aclose()


def _migrate(settings: Settings) -> int:
    """`omni migrate`: on redis.url, or on the embedded server's data (stop `omni serve`
    first: two servers must not share one data_dir)."""
    embedded = None
    url = settings.redis.url
    if not url:
        embedded = EmbeddedRedis(settings.redis.data_dir)
        embedded.start()
        url = embedded.url
    try:
        report = asyncio.run(_migrate_with(settings, url))
    finally:
        if embedded is not None:
            embedded.stop()
    print(
        f"omni migrate: phones: {report.customers} customers read, {report.profiles} "
        f"profile phones and {report.identities} identities rewritten, {report.invalid} "
        f"invalid numbers left as they were, {report.conflicts} conflicts"
    )
    return 0


async def _work(settings: Settings, channels: tuple[Channel, ...]) -> None:
    """One worker until SIGTERM/SIGINT; the round in progress finishes first."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    timeout = settings.redis.request_timeout
    redis = Redis.from_url(
        settings.redis.url, socket_connect_timeout=timeout, socket_timeout=timeout
    )
    try:
        store = Store(redis, inbox_shards=inbox_shards(settings))
        async with open_services(settings, redis, store, channels) as services:
            await Worker(redis, services.handlers, config=settings.outbox).run(stop)
    finally:
        await redis.aclose()


def _demo(settings: Settings, url: str | None) -> int:
    base = url or f"http://{settings.server.host}:{settings.server.port}"
    try:
        asyncio.run(play(base, settings))
    except DemoError as exc:
        print(f"omni demo: {exc}", file=sys.stderr)
        return 1
    except aiohttp.ClientConnectionError:
        print(f"omni demo: nothing answers at {base}; start omni with `make run`", file=sys.stderr)
        return 1
    return 0


def _worker(settings: Settings, channels: tuple[Channel, ...]) -> int:
    if not settings.redis.url:
        print(
            "omni: configuration error: redis.url: `omni worker` needs a shared Redis "
            "(set OMNI_REDIS_URL); `omni serve` without one runs its own worker",
            file=sys.stderr,
        )
        return 2
    asyncio.run(_work(settings, channels))
    structlog.get_logger("omni").info("omni worker stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        # Each channel parses its own section: a bad channel setting stops here too.
        channels = load()
        validate(settings, channels)
    except ConfigError as exc:
        print(f"omni: configuration error: {exc}", file=sys.stderr)
        return 2
    configure(settings.log, cache=True)
    if args.command == "worker":
        return _worker(settings, channels)
    if args.command == "demo":
        return _demo(settings, args.url)
    if args.command == "migrate":
        return _migrate(settings)
    if args.reuse_port and not settings.redis.url:
        # Each process would start its own embedded server on one data_dir.
        print(
            "omni: configuration error: redis.url: processes sharing a port with "
            "--reuse-port need one shared Redis (set OMNI_REDIS_URL)",
            file=sys.stderr,
        )
        return 2
    host = args.host or settings.server.host
    port = settings.server.port if args.port is None else args.port
    refused = refusal(settings, host)
    if refused:
        print(f"omni: configuration error: {refused}", file=sys.stderr)
        return 2
    # The embedded Redis's lock names this port to a second `omni serve`.
    settings = replace(settings, server=replace(settings.server, port=port))
    log = structlog.get_logger("omni")
    redis = (settings.redis.url and "external") or f"embedded, data in {settings.redis.data_dir}"
    log.info("omni serving", url=f"http://{host}:{port}", redis=redis)
    try:
        web.run_app(
            create_app(settings, channels),
            host=host,
            port=port,
            reuse_port=args.reuse_port or None,
            shutdown_timeout=settings.server.shutdown_timeout,
            access_log=None,
            print=None,
        )
    except ConfigError as exc:
        print(f"omni: configuration error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"omni: cannot serve on {host}:{port}: {exc.strerror}", file=sys.stderr)
        return 1
    log.info("omni stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
