"""The `omni` command: the only place that reads the environment and runs a server."""

from __future__ import annotations

import argparse
import asyncio
import errno
import gc
import os
import signal
import socket
import sys
from collections.abc import Mapping
from dataclasses import replace
from urllib.parse import urlsplit

import aiohttp
import redis.exceptions
import structlog
from aiohttp import web

from omni.app import create_app
from omni.channel import Channel, load, validate
from omni.demo import DemoError, play
from omni.devkeys import refusal
from omni.errors import ConfigError
from omni.eventloop import loop_name, new_event_loop
from omni.logs import RequestLine, configure
from omni.migrations import PhoneMigration, migrate_phones
from omni.processes import serve_processes, supervised
from omni.redis_client import close, connect
from omni.redis_server import EmbeddedRedis
from omni.reports import read_settings as report_settings
from omni.services import open_services
from omni.settings import Settings, inbox_shards
from omni.store import Store
from omni.survey_settings import read_settings as survey_settings
from omni.worker import Worker

_CONFIG_HELP = "settings file (default: $OMNI_CONFIG, else config/omni.toml when present)"
_SETTINGS_NOTE = (
    "Every setting can also be given as OMNI_<SECTION>_<KEY> (OMNI_SERVER_PORT=9000,\n"
    "OMNI_REDIS_URL=redis://host:6379); see README 'Configuration'."
)


def _formatter(prog: str) -> argparse.HelpFormatter:
    # Wide enough that every option's help is one line on any terminal.
    return argparse.RawDescriptionHelpFormatter(prog, width=110, max_help_position=24)


def _command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    summary: str,
    text: str,
) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        name,
        help=summary,
        description=f"{summary}.\n\n{text}",
        epilog=_SETTINGS_NOTE,
        formatter_class=_formatter,
    )
    parser.add_argument("--config", metavar="FILE", help=_CONFIG_HELP)
    return parser


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="omni",
        formatter_class=_formatter,
        description="omni: one customer context across every channel. "
        "`omni COMMAND --help` lists a command's options.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = _command(
        commands,
        "serve",
        "serve the HTTP API",
        "Without redis.url it starts an embedded Valkey with its data under redis.data_dir\n"
        "(./var) and runs a delivery worker in-process (outbox.in_process_worker).",
    )
    serve.add_argument("--host", help="bind address (default: server.host, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: server.port, 8080)")
    serve.add_argument(
        "--processes",
        type=int,
        default=1,
        metavar="N",
        help="N web processes on one port, supervised by this one (default 1)",
    )
    serve.add_argument(
        "--reuse-port",
        action="store_true",
        help="share the port with other `omni serve --reuse-port` (every one needs the flag)",
    )
    serve.add_argument("--supervisor-fd", type=int, help=argparse.SUPPRESS)  # --processes' own
    worker = _command(
        commands,
        "worker",
        "deliver queued replies and bot webhooks",
        "Runs until SIGTERM/SIGINT (the round in progress finishes). Needs a shared Redis\n"
        "(redis.url / OMNI_REDIS_URL); run as many as you like beside `omni serve`: each\n"
        "delivery is taken by one of them, and one killed mid-delivery is taken over after\n"
        "outbox.visibility_timeout_ms. Channels and bots come from the same settings.",
    )
    del worker  # no options beyond --config
    demo = _command(
        commands,
        "demo",
        "play the acceptance story against a running omni",
        "Start omni first (`make run`). The demo signs each channel's requests with the\n"
        "same settings the server reads, so give it the same file and environment.",
    )
    demo.add_argument("--url", help="omni's address (default: server.public_url)")
    demo.add_argument("--port", type=int, help="omni's port on this machine (default: server.port)")
    migrate = _command(
        commands,
        "migrate",
        "bring stored data up to this version (phone numbers to E.164)",
        "Idempotent, and safe while omni serves on a shared redis.url. With the embedded\n"
        "server, stop `omni serve` first: one data directory has one server.",
    )
    del migrate
    return parser


def _settings(config: str | None) -> tuple[Mapping[str, str], Settings, tuple[Channel, ...]]:
    env = dict(os.environ)
    if config:
        if not os.path.isfile(config):
            raise ConfigError(f"--config: no such file: {config}")
        env["OMNI_CONFIG"] = config
    settings = Settings.from_env(env)
    # Each channel parses its own section: a bad channel setting stops here too.
    channels = load()
    validate(settings, channels)
    survey_settings(settings), report_settings(settings)  # their sections, checked alike
    return env, settings, channels


async def _migrate_with(settings: Settings, url: str) -> PhoneMigration:
    redis = connect(settings.redis, url, socket_timeout=30)
    try:
        return await migrate_phones(Store(redis), settings.identity.default_region or None)
    finally:
        await close(redis)


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
    except (
        OSError,
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
        redis.exceptions.RedisClusterException,  # no node of the cluster answers
    ) as exc:
        print(
            f"omni migrate: cannot reach Redis at {url} ({exc}); check redis.url / OMNI_REDIS_URL",
            file=sys.stderr,
        )
        return 1
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
    redis = connect(
        settings.redis, settings.redis.url, socket_timeout=settings.redis.request_timeout
    )
    try:
        store = Store(redis, inbox_shards=inbox_shards(settings), stats_parts=settings.redis.parts)
        async with open_services(settings, redis, store, channels) as services:
            await Worker(redis, services.handlers, config=settings.outbox).run(stop)
    finally:
        await close(redis)


def _demo(settings: Settings, url: str | None, port: int | None) -> int:
    if url:
        # The demo signs Twilio's requests over the server's public URL: the one given.
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            print(f"omni demo: --url must be http(s)://host[:port], not {url!r}", file=sys.stderr)
            return 2
        if not settings.server.public_url_set:
            server = replace(settings.server, public_url=url.rstrip("/"))
            settings = replace(settings, server=server)
    elif port is not None:
        settings = _at(settings, settings.server.host, port)
    base = url or settings.server.public_url
    try:
        asyncio.run(play(base, settings))
    except DemoError as exc:
        print(f"omni demo: {exc}", file=sys.stderr)
        return 1
    except aiohttp.ClientConnectionError:
        print(
            f"omni demo: nothing answers at {base}; start omni first (`make run`, or "
            "`make run PORT=9000` and `omni demo --port 9000`), or pass --url",
            file=sys.stderr,
        )
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


async def _freeze_heap(_: web.Application) -> None:
    """Move what start-up built (modules, libphonenumber's metadata, the routes, the
    OpenAPI document: ~80,000 objects) out of the garbage collector's sight. Its full
    collections, which walk every tracked object, otherwise walk them all a few times a
    minute under load, pausing every request in flight; frozen, they walk a third as
    many (a tail-latency cause the bench's p99 showed, issue 16)."""
    gc.collect()
    gc.freeze()


def _at(settings: Settings, host: str, port: int) -> Settings:
    # The embedded Redis's lock names this port to a second `omni serve`, and the
    # default public_url follows it.
    return replace(settings, server=settings.server.at(host, port))


def _cannot_bind(host: str, port: int, exc: OSError, *, shared: bool) -> str:
    """What to do when the port cannot be bound."""
    where = f"omni: cannot serve on {host}:{port}"
    elsewhere = "choose another port (--port 9000, OMNI_SERVER_PORT=9000 or make run PORT=9000)"
    if exc.errno == errno.EADDRINUSE and shared:
        return (
            f"{where}: the port is held by a process started without --reuse-port; every "
            "process sharing a port needs the flag, the first one too (or start them "
            f"together with `omni serve --processes N`), or {elsewhere}"
        )
    if exc.errno == errno.EADDRINUSE:
        return (
            f"{where}: the port is in use; stop what holds it or {elsewhere}; to serve "
            "one port from several processes use `omni serve --processes N`"
        )
    if exc.errno == errno.EACCES:
        return f"{where}: permission denied (ports below 1024 need privileges); {elsewhere}"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{where}: no such address on this machine; check --host / OMNI_SERVER_HOST"
    return f"{where}: {exc.strerror}"


def _check_port(host: str, port: int, *, shared: bool) -> None:
    """Raise the OSError serving would get binding the port (as aiohttp binds it), before
    anything starts. A check, not a reservation: the bind itself is checked again."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if shared:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))


def _serve(
    args: argparse.Namespace,
    env: Mapping[str, str],
    settings: Settings,
    channels: tuple[Channel, ...],
    request_line: RequestLine,
) -> int:
    if args.processes < 1:
        print("omni: --processes: must be 1 or more", file=sys.stderr)
        return 2
    shared = args.reuse_port or args.processes > 1
    # With --reuse-port and no redis.url this process owns the embedded server; the
    # others sharing the port must use it (OMNI_REDIS_URL): the data-dir lock refuses
    # one that tries to start its own, naming the URL.
    host = args.host or settings.server.host
    port = settings.server.port if args.port is None else args.port
    refused = refusal(settings, host)
    if refused:
        print(f"omni: configuration error: {refused}", file=sys.stderr)
        return 2
    settings = _at(settings, host, port)
    log = structlog.get_logger("omni")
    redis = (settings.redis.url and "external") or f"embedded, data in {settings.redis.data_dir}"
    try:
        _check_port(host, port, shared=shared)  # before the embedded server starts
    except OSError as exc:
        print(_cannot_bind(host, port, exc, shared=shared), file=sys.stderr)
        return 1
    if args.processes > 1:
        log.info("omni serving", url=f"http://{host}:{port}", redis=redis, processes=args.processes)
        code = asyncio.run(serve_processes(settings, args.processes, env))
        log.info("omni stopped", code=code)
        return code
    announce = supervised(args.supervisor_fd) if args.supervisor_fd is not None else None
    try:
        loop = new_event_loop(settings.server.event_loop)
    except ConfigError as exc:
        print(f"omni: configuration error: {exc}", file=sys.stderr)
        return 2
    if announce is None:
        log.info("omni serving", url=f"http://{host}:{port}", redis=redis, loop=loop_name(loop))
    app = create_app(settings, channels, request_line=request_line)
    app.on_startup.append(_freeze_heap)  # last: after every start-up step has loaded
    try:
        web.run_app(
            app,
            host=host,
            port=port,
            reuse_port=shared or None,
            shutdown_timeout=settings.server.shutdown_timeout,
            access_log=None,
            print=announce,
            loop=loop,
        )
    except OSError as exc:
        print(_cannot_bind(host, port, exc, shared=shared), file=sys.stderr)
        return 1
    log.info("omni stopped" if announce is None else "omni process stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        env, settings, channels = _settings(args.config)
    except ConfigError as exc:
        print(f"omni: configuration error: {exc}", file=sys.stderr)
        return 2
    line = configure(settings.log, cache=True)
    try:
        if args.command == "worker":
            return _worker(settings, channels)
        if args.command == "demo":
            return _demo(settings, args.url, args.port)
        if args.command == "migrate":
            return _migrate(settings)
        return _serve(args, env, settings, channels, line)
    except ConfigError as exc:
        print(f"omni: configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
