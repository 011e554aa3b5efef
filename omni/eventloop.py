"""The event loop `omni serve` runs on (`server.event_loop`): uvloop when it is installed
("auto", the default), or asyncio's own.

uvloop (libuv under asyncio's interface) takes less CPU per request than asyncio's
selector loop: 0-13% less for a history page or a context read through the app, 16 at
once, in one process (`python -m bench.micro`, alternating the loops, on a loaded
machine); never more. It is a dependency on the
platforms it supports; where it is not installed, "auto" runs asyncio's loop, so omni
still runs everywhere Python does.
"""

from __future__ import annotations

import asyncio
import importlib
from typing import Literal

from omni.errors import ConfigError

EventLoop = Literal["auto", "uvloop", "asyncio"]
EVENT_LOOPS: tuple[EventLoop, ...] = ("auto", "uvloop", "asyncio")


def new_event_loop(kind: EventLoop = "auto") -> asyncio.AbstractEventLoop:
    """A new loop of `kind`; "uvloop" when uvloop is not installed is a ConfigError."""
    if kind == "asyncio":
        return asyncio.new_event_loop()
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        if kind == "uvloop":
            raise ConfigError(
                "server.event_loop: uvloop is not installed (pip install uvloop)"
            ) from None
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """ "uvloop" or "asyncio", for the start-up log line and the bench's table."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
