"""The mobile app's routes: sessions and login, messages in, catch-up, push-token
registration and a live socket (`adapters.mobile.protocol`); push is `adapters.mobile.sender`.

    POST /channels/mobile/sessions   start | renew | identify (a login links the customer)
    POST /channels/mobile/messages   a message, idempotent on client_msg_id
    GET  /channels/mobile/messages   catch-up: ?after=<message id or next_after>&limit=
    POST /channels/mobile/devices    register (or re-register) an APNs/FCM push token
    GET  /channels/mobile/ws         the live socket, while the app is in the foreground

A reply goes over the socket when the customer has one open in any omni process (the
socket keeps a presence marker in Redis); otherwise it is pushed to each of the
customer's active devices through `[mobile] push_url`. A token the provider calls invalid
marks its device inactive and is not pushed to again until the app registers it anew.
Without a push endpoint or an active device nothing is pushed and the reply is `sent`
(the app finds it in catch-up), with the reason in its status.
"""

from __future__ import annotations

import msgspec
import structlog
from aiohttp import web

from adapters.chat import routes as chat
from adapters.chat import socket
from adapters.chat.protocol import MessageBody
from adapters.chat.sessions import SessionRequest
from adapters.mobile.config import NAME
from adapters.mobile.protocol import DeviceRequest, MobileAdapter
from omni import channel_http
from omni.devices import register
from omni.links import Linked
from omni.route import PAGE_LIMIT, Param, Route
from omni.state import STORE
from omni.web_io import json_response

log = structlog.get_logger("adapters.mobile")


class DeviceView(msgspec.Struct, frozen=True):
    device_id: str
    external_id: str
    status: str


# -- routes --------------------------------------------------------------------------------


async def mobile_sessions(request: web.Request) -> web.StreamResponse:
    return await chat.sessions(request, NAME)


async def mobile_message(request: web.Request) -> web.StreamResponse:
    return await chat.post_message(request, NAME)


async def mobile_link(request: web.Request) -> web.StreamResponse:
    return await chat.present_link(request, NAME)


async def mobile_catch_up(request: web.Request) -> web.StreamResponse:
    return await chat.catch_up(request, NAME)


async def mobile_socket(request: web.Request) -> web.StreamResponse:
    return await socket.serve(request, NAME)


async def mobile_devices(request: web.Request) -> web.StreamResponse:
    """Register a push token for the session's customer; with a verified identifier on
    an anonymous session, this is also the login."""
    adapter = channel_http.adapter(request, NAME, MobileAdapter)
    registration = adapter.parse_device(await channel_http.inbound(request))
    await chat.live(request, registration.session)
    store = request.app[STORE]
    if registration.previous is not None and registration.user_id is not None:
        await chat.log_in(store, NAME, registration.user_id, registration.previous)
    cid = await store.customers.ensure(NAME, registration.external_id)
    await register(store, cid, registration.device, registration.external_id)
    return json_response(msgspec.convert(adapter.render_device(registration), DeviceView))


ROUTES: tuple[Route, ...] = (
    Route("POST", "/channels/mobile/sessions", mobile_sessions,
          "Start an anonymous app-user session, renew it, or identify (log in, verified by "
          "identifier_hash = hex HMAC-SHA256 of the user id); 201 for a new app user",
          NAME, body=SessionRequest, body_required=False, response=chat.SessionView,
          status=201,
          errors=(400, 401, 404, 422)),
    Route("POST", "/channels/mobile/messages", mobile_message,
          "A message from the app (Bearer session token); a retried client_msg_id is "
          "acknowledged with the same id and stored once", NAME, body=MessageBody,
          response=chat.Ack, status=201, errors=(400, 401, 404, 413, 422)),
    Route("POST", "/channels/mobile/link", mobile_link,
          "Present a link token from this session (the token in the URL a bot sent): the "
          "session's identity joins the token's customer; forged 401, expired or used 410",
          NAME, body=chat.LinkBody, response=Linked, errors=(400, 401, 404, 410, 422)),
    Route("GET", "/channels/mobile/messages", mobile_catch_up,
          "Catch-up: the app's messages after a message id (or next_after), oldest first",
          NAME, response=chat.CatchUpPage, errors=(400, 401, 404),
          params=(Param("after", "query", "the last message id the app saw", chat.AFTER),
                  PAGE_LIMIT)),
    Route("POST", "/channels/mobile/devices", mobile_devices,
          "Register an APNs or FCM push token for the session's customer (re-register when "
          "the OS rotates it); an identifier with its hash also logs in", NAME,
          body=DeviceRequest, response=DeviceView, errors=(400, 401, 403, 404, 413, 422)),
    Route("GET", "/channels/mobile/ws", mobile_socket,
          "The live socket while the app is open: replies there are not pushed (frames in "
          "adapters.chat.protocol)", NAME, status=101,
          params=(Param("token", "query", "the session token, if not in Authorization"),),
          errors=(400, 401, 404)),
)  # fmt: skip
