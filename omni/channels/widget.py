"""The website chat widget's script, `GET /widget.js`: the one tag a brand adds to its
pages (`<script src="https://omni.example.com/widget.js" async></script>`). The script is
static, shipped in the package (`adapters/web_widget/`), with no build step; it speaks
the web channel's routes (`omni.channels.web`), which check the page's Origin.

It carries no secret and no configuration of the server's, so any page may load it:
what a page may *do* with it is decided by `[web] allowed_origins` on the chat routes.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

import aiohttp
from aiohttp import web

from omni.route import Route
from omni.settings import Settings
from omni.store import Store

NAME = "widget"
ASSETS = "web_widget"

_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    # Loaded by other sites' pages, also those that isolate themselves (COEP).
    "Cross-Origin-Resource-Policy": "cross-origin",
    "Access-Control-Allow-Origin": "*",
    # Short: a new release reaches every page within minutes.
    "Cache-Control": "public, max-age=300",
}


@cache
def _read(name: str) -> bytes:
    return resources.files("adapters").joinpath(f"{ASSETS}/{name}").read_bytes()


async def script(request: web.Request) -> web.Response:
    return web.Response(
        body=_read("widget.js"), content_type="text/javascript", charset="utf-8", headers=_HEADERS
    )


ROUTES: tuple[Route, ...] = (
    Route("GET", "/widget.js", script,
          "The website chat widget: one <script async> tag on the brand's page; its page "
          "must be in [web] allowed_origins to chat", NAME),
)  # fmt: skip


def setup(settings: Settings, session: aiohttp.ClientSession, store: Store) -> tuple[None, None]:
    # Static: nothing to configure, no adapter and no sender.
    return None, None
