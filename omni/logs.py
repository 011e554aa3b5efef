"""Logging: structlog configured once by the CLI; redaction runs before rendering.

Personal data never reaches a log line: values under keys that hold message content or
contact details are replaced outright, and any string is scrubbed of e-mail addresses
and phone numbers, wherever in the event they appear.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import re
import sys
from collections.abc import Callable, MutableMapping
from typing import Any, TextIO

import msgspec
import structlog

from omni.clock import iso, now_ms
from omni.settings import LogSettings

_SENSITIVE_KEYS = frozenset(
    {"text", "body", "transcript", "email", "phone", "name", "q", "query", "caption", "digits"}
)
_EMAIL = re.compile(r"[\w.%+-]+@[\w-]+(\.[\w-]+)+")
# "+33 6 12 34 56 78" or a bare 9-15 digit run; not dates, times or IP addresses.
_PHONE = re.compile(r"\+\d[\d ()-]{6,}\d|(?<![\w.:-])\d{9,15}(?![\w.:-])")
_REDACTED = "[redacted]"


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return _PHONE.sub("[phone]", _EMAIL.sub("[email]", value))
    if isinstance(value, dict):
        return {k: _REDACTED if k in _SENSITIVE_KEYS else _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


# Keys whose values omni's own code sets (never what a customer or a channel sent).
_OWN_KEYS = frozenset(
    {"event", "timestamp", "level", "logger", "request_id", "duration_ms", "method", "route",
     "status"}
)  # fmt: skip


def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: no e-mail, phone number or message text survives it."""
    # Only the keys omni's code does not set: none, in a request's line (every line a
    # request writes), so its cost is the one set difference.
    for key in event.keys() - _OWN_KEYS:
        event[key] = _REDACTED if key in _SENSITIVE_KEYS else _scrub(event[key])
    return event


def _timestamp(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    # omni's own formatting, cached per second: a tenth of a request line's cost less.
    event["timestamp"] = iso(now_ms())
    return event


def _shared(writer: TurnWriter) -> Callable[..., TurnWriter]:
    return lambda *_: writer


_JSON = msgspec.json.Encoder(enc_hook=repr)


def _render_json(_: Any, __: str, event: MutableMapping[str, Any]) -> str:
    """structlog's last processor: the event as one JSON line (a renderer of omni's own
    rather than JSONRenderer around the same encoder, a call less a line)."""
    return _JSON.encode(event).decode()


class TurnWriter:
    """Lines written once per event-loop turn (at once outside a running loop): a busy
    server makes one write for all the lines of a turn, not one per request. Ordered,
    since every logger shares it; a process killed outright loses the lines of the turn
    it was in, and a normal exit writes what is pending."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._lines: list[str] = []
        atexit.register(self.flush)

    def msg(self, message: str) -> None:
        self._lines.append(message + "\n")
        if len(self._lines) > 1:
            return  # a flush is already due this turn
        try:
            asyncio.get_running_loop().call_soon(self.flush)
        except RuntimeError:
            self.flush()

    def flush(self) -> None:
        if self._lines:
            lines, self._lines = self._lines, []
            self._out.write("".join(lines))
            self._out.flush()

    debug = info = warning = warn = error = err = critical = exception = fatal = failure = msg


RequestLine = Callable[[str, str, int, float], None]
"""Writes the line every HTTP request ends with: its method, route, status and duration
in milliseconds (`omni.middleware`), the request's context (its id) merged in."""

_http = structlog.get_logger("omni.http")


def request_line(method: str, route: str, status: int, duration_ms: float) -> None:
    """The request line through structlog, as any other line: whatever configure() was
    last called with (a test's capture, the console renderer), when it was called."""
    _http.info("request", method=method, route=route, status=status, duration_ms=duration_ms)


def _json_request_line(writer: TurnWriter) -> RequestLine:
    """`request_line` as configure() sets it up for JSON at level info or below: the same
    line through the same processors (tests/test_logs.py compares the two), without
    structlog's bound logger around them, and without `format_exc_info` (a request line
    carries no exception). Every request writes one: structlog's way cost a server ~35
    µs a request, this ~17 (bench.serve_cpu --scenario healthz)."""
    write = writer.msg

    def line(method: str, route: str, status: int, duration_ms: float) -> None:
        event = {
            "method": method, "route": route, "status": status, "duration_ms": duration_ms,
            "event": "request",
        }  # fmt: skip
        structlog.contextvars.merge_contextvars(None, "info", event)
        event["level"] = "info"  # add_log_level's, for the method it would be called by
        _timestamp(None, "info", event)
        write(_render_json(None, "info", redact(None, "info", event)))

    return line


def configure(
    settings: LogSettings, stream: TextIO | None = None, *, cache: bool = False
) -> RequestLine:
    """`cache`: a process that configures logging once, before logging anything (`omni
    serve`, `omni worker`): loggers resolve this configuration on first use, and lines
    are written once per event-loop turn (TurnWriter). Returns how a server writes its
    request lines: for `cache` and JSON, a writer of its own (`_json_request_line`)."""
    out = stream or sys.stderr
    as_json = settings.format == "json" or (settings.format == "auto" and not out.isatty())
    renderer: Any = _render_json if as_json else structlog.dev.ConsoleRenderer()
    level = logging.getLevelNamesMapping()[settings.level.upper()]
    writer = TurnWriter(out) if cache else None
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _timestamp,
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=_shared(writer) if writer else structlog.WriteLoggerFactory(out),
        # Uncached by default: module-level loggers must follow a later configure()
        # (tests do); a server caches, for a cheaper log line.
        cache_logger_on_first_use=cache,
    )
    if writer is None or not as_json or level > logging.INFO:
        return request_line  # (above info, structlog's filter drops it for nothing)
    return _json_request_line(writer)
