"""The `omni` command: the only place that reads the environment and runs a server."""

from __future__ import annotations

import argparse
import sys

import structlog
from aiohttp import web

from omni.app import create_app
from omni.errors import ConfigError
from omni.logs import configure
from omni.settings import Settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="omni", description="omnichannel conversation continuity")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the HTTP API")
    serve.add_argument("--host", help="bind address (default: server.host)")
    serve.add_argument("--port", type=int, help="port (default: server.port)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"omni: configuration error: {exc}", file=sys.stderr)
        return 2
    configure(settings.log)
    host = args.host or settings.server.host
    port = settings.server.port if args.port is None else args.port
    log = structlog.get_logger("omni")
    redis = (settings.redis.url and "external") or f"embedded, data in {settings.redis.data_dir}"
    log.info("omni serving", url=f"http://{host}:{port}", redis=redis)
    try:
        web.run_app(
            create_app(settings),
            host=host,
            port=port,
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
