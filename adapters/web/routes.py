"""The website chat widget: anonymous sessions, login, messages in, replies out over a
WebSocket, and catch-up after a reconnect (`adapters.web.protocol`, `adapters.chat`).

    POST    /channels/web/sessions   start | renew | identify (a login links the customer)
    POST    /channels/web/messages   a message, idempotent on client_msg_id
    GET     /channels/web/messages   catch-up: ?after=<message id or next_after>&limit=
    GET     /channels/web/ws         the live socket (?token=); Origin must be allowed
    OPTIONS /channels/web/{route}    CORS preflight for the widget's page

The widget (`GET /widget.js`: `widget.js` beside this module, static, no build step) runs
on the brand's pages, another origin than omni's: the HTTP routes answer CORS for
`[web] allowed_origins` (problem documents included, so the widget can read a 401 and
start over) and refuse a request from any other Origin (403) before it runs; the socket
refuses one before the upgrade.
Requests without an Origin (servers, the app) are not a page's and are not checked.

A reply on the web is `sent` once stored and published: the customer's sockets write it
(and mark it `delivered`), and a widget that was away gets it from catch-up.
"""

from __future__ import annotations

import functools
from importlib import resources

import structlog
from aiohttp import web

from adapters.chat import routes as chat
from adapters.chat import socket
from adapters.chat.protocol import MessageBody
from adapters.chat.sessions import SessionRequest
from adapters.web.config import NAME, read
from adapters.web.protocol import WebAdapter, allowed_origin
from omni import channel_http
from omni.auth import Handler
from omni.errors import Forbidden, NotFound, ProblemError
from omni.links import Linked
from omni.middleware import problem_response
from omni.route import PAGE_LIMIT, Param, Route
from omni.state import SETTINGS

PREFLIGHT_MAX_AGE_S = 600
_PREFLIGHTED = ("sessions", "messages", "link")
# The widget's script carries no secret and no setting, so any page may load it (what a
# page may do with it is decided by the Origin check on the chat routes).
_SCRIPT_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Resource-Policy": "cross-origin",  # also for pages that isolate (COEP)
    "Access-Control-Allow-Origin": "*",
    "Cache-Control": "public, max-age=300",  # a new release reaches pages within minutes
}


def _origin(request: web.Request) -> str | None:
    """The request's Origin when the operator allows it, else None."""
    origin = request.headers.get("Origin")
    allowed = read(request.app[SETTINGS]).allowed_origins
    return origin if origin is not None and allowed_origin(origin, allowed) else None


def _cors(handler: Handler) -> Handler:
    """Answer an allowed Origin with CORS headers, on problems too (the widget must be
    able to read a 401 to start a new session). A page from any other Origin is refused
    before the handler runs, so it stores nothing (a form post needs no preflight)."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        channel_http.adapter(request, NAME, WebAdapter)  # unconfigured: 404 for every page
        origin = _origin(request)
        if origin is None and "Origin" in request.headers:
            raise Forbidden("this page's Origin may not use the chat routes", field="Origin")
        try:
            response = await handler(request)
        except ProblemError as problem:
            if origin is None:
                raise
            request_id = structlog.contextvars.get_contextvars().get("request_id", "")
            response = problem_response(problem, str(request_id))
        if origin is not None:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = "X-Request-Id"
            response.headers["Vary"] = "Origin"
        return response

    return wrapped


@_cors
async def web_sessions(request: web.Request) -> web.StreamResponse:
    return await chat.sessions(request, NAME)


@_cors
async def web_message(request: web.Request) -> web.StreamResponse:
    return await chat.post_message(request, NAME)


@_cors
async def web_link(request: web.Request) -> web.StreamResponse:
    return await chat.present_link(request, NAME)


@_cors
async def web_catch_up(request: web.Request) -> web.StreamResponse:
    return await chat.catch_up(request, NAME)


async def web_socket(request: web.Request) -> web.StreamResponse:
    channel_http.adapter(request, NAME, WebAdapter)
    if _origin(request) is None:
        raise Forbidden("this page's Origin may not open the chat socket", field="Origin")
    return await socket.serve(request, NAME)


async def web_preflight(request: web.Request) -> web.StreamResponse:
    channel_http.adapter(request, NAME, WebAdapter)
    if request.match_info["route"] not in _PREFLIGHTED:
        raise NotFound("no such route")
    origin = _origin(request)
    if origin is None:
        raise Forbidden("this page's Origin may not use the chat routes", field="Origin")
    return web.Response(
        status=204,
        headers={
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Methods": "GET, POST",
            "Access-Control-Allow-Headers": "Authorization, Content-Type, X-Request-Id",
            "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE_S),
            "Vary": "Origin",
        },
    )


@functools.cache
def _script() -> bytes:
    return resources.files("adapters").joinpath("web/widget.js").read_bytes()


async def web_widget(request: web.Request) -> web.StreamResponse:
    channel_http.adapter(request, NAME, WebAdapter)
    return web.Response(
        body=_script(), content_type="text/javascript", charset="utf-8", headers=_SCRIPT_HEADERS
    )


_TOKEN = Param("token", "query", "the session token (browsers cannot set headers on a socket)")
ROUTES: tuple[Route, ...] = (
    Route("POST", "/channels/web/sessions", web_sessions,
          "Start an anonymous visitor session, renew it, or identify (log in, verified by "
          "identifier_hash = hex HMAC-SHA256 of the user id); 201 for a new visitor",
          NAME, body=SessionRequest, body_required=False, response=chat.SessionView,
          status=201,
          errors=(400, 401, 404, 422)),
    Route("POST", "/channels/web/messages", web_message,
          "A message from the visitor (Bearer session token); a retried client_msg_id is "
          "acknowledged with the same id and stored once", NAME, body=MessageBody,
          response=chat.Ack, status=201, errors=(400, 401, 404, 413, 422)),
    Route("POST", "/channels/web/link", web_link,
          "Present a link token from this session (the token in the URL a bot sent): the "
          "session's identity joins the token's customer; forged 401, expired or used 410",
          NAME, body=chat.LinkBody, response=Linked, errors=(400, 401, 404, 410, 422)),
    Route("GET", "/channels/web/messages", web_catch_up,
          "Catch-up: the chat's messages after a message id (or next_after), oldest first",
          NAME, response=chat.CatchUpPage, errors=(400, 401, 404),
          params=(Param("after", "query", "the last message id the widget saw", chat.AFTER),
                  PAGE_LIMIT)),
    Route("GET", "/channels/web/ws", web_socket,
          "The live chat socket: replies, typing and acks out; messages, typing, read "
          "watermarks and hello/resume in (frames in adapters.chat.protocol)", NAME,
          status=101, params=(_TOKEN,), errors=(400, 401, 403, 404)),
    Route("OPTIONS", "/channels/web/{route}", web_preflight,
          "CORS preflight for the sessions, messages and link routes", NAME, status=204,
          params=(Param("route", "path", "sessions, messages or link", required=True),),
          errors=(403, 404)),
    Route("GET", "/widget.js", web_widget,
          "The website chat widget: one <script async> tag on the brand's page; its page "
          "must be in [web] allowed_origins to chat", NAME, errors=(404,)),
)  # fmt: skip
