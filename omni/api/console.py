"""The agents' console at `/console`: static HTML, CSS and JavaScript shipped in the
package (`omni/console/`), with no build step. It uses only the public API, with the
agent key the person signs in with, so it is also the API's reference client."""

from __future__ import annotations

from functools import cache
from importlib import resources

from aiohttp import web

from omni.errors import NotFound

_TYPES = {
    "index.html": "text/html",
    "console.css": "text/css",
    "console.js": "text/javascript",
    "reports.js": "text/javascript",
    "identity.js": "text/javascript",
}
# Only this origin's script and styles run; images (attachments) may come from anywhere
# over https; the page may not be framed (clickjacking a signed-in agent).
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' https: data:; media-src 'self' https:; "
        "connect-src 'self'; style-src 'self'; script-src 'self'; frame-ancestors 'none'; "
        "base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@cache
def _read(name: str) -> bytes:
    return resources.files("omni").joinpath(f"console/{name}").read_bytes()


def _file(name: str) -> web.Response:
    kind = _TYPES.get(name)
    if kind is None:
        raise NotFound(f"the console has no {name}")
    return web.Response(body=_read(name), content_type=kind, charset="utf-8", headers=_HEADERS)


async def page(request: web.Request) -> web.Response:
    return _file("index.html")


async def asset(request: web.Request) -> web.Response:
    return _file(request.match_info["asset"])
