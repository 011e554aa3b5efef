"""The live socket of omni's own clients: `GET /channels/<web|mobile>/ws` (frames in
`adapters.chat.protocol`).

A socket belongs to the session's customer. It listens to that customer's live events
(every omni process publishes them through Redis) and writes this channel's messages to
the client: replies from bots and agents as they are stored, and the customer's own sends
from other tabs or devices. The client sends messages, typing, read watermarks and pings
over it, and on (re)connect says `hello` with the last id it saw, to be sent what it
missed. While open, the socket keeps a presence marker (`omni.presence.present`)
that the mobile sender reads to choose the socket over a push.

A reply is `sent` once the worker has handled it; when this socket has written it too,
the socket marks it `delivered`. Both orders of "written" and "sent" are handled, and the
mark is written only after the worker's status, so it is never overwritten by it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections import OrderedDict
from typing import Any

import msgspec
import structlog
from aiohttp import WSCloseCode, WSMsgType, web

from adapters.chat.protocol import FRAME_MAX, ClientChannel, InboundFrame, Ping, Resume, Typing
from adapters.chat.routes import (
    live,
    locate,
    resolve_after,
    ulid_ms,
)
from adapters.chat.sessions import Session
from omni import channel_http
from omni.channel import Marked, Received
from omni.clock import iso, now_ms
from omni.errors import BadRequest, ProblemError, Unauthenticated, Unavailable
from omni.live import Event, Listener
from omni.middleware import REDIS_DOWN
from omni.model import PAGE_MAX, Message, MessageStatus
from omni.presence import PRESENCE_TTL_MS, absent, present
from omni.ratelimit import LIMITER
from omni.sockets import SOCKETS
from omni.state import SERVICES, STORE

log = structlog.get_logger("adapters.chat")

HEARTBEAT_S = 30.0  # aiohttp pings the client; one that stops answering is closed
REFRESH_S = PRESENCE_TTL_MS / 3000  # presence is refreshed three times per TTL
READY_TIMEOUT_S = 5.0
REPLAY_PAGES = 5  # a hello replays at most this many pages; catch-up serves the rest
REMEMBER = 512  # message ids a socket remembers, to write each message once
CLOSE_UNAUTHENTICATED = 4401  # private-use close code: start a new session


async def serve(request: web.Request, channel: str) -> web.StreamResponse:
    """Authenticate (`?token=` or Authorization), then upgrade and run the socket. Every
    refusal (no channel, bad token, not a WebSocket request) is answered before upgrade."""
    adapter = channel_http.adapter(request, channel, ClientChannel)
    session = await live(request, adapter.authenticate(await channel_http.inbound(request)))
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT_S, max_msg_size=FRAME_MAX)
    if not ws.can_prepare(request).ok:
        raise BadRequest("this route speaks WebSocket only: send Upgrade: websocket")
    services = request.app[SERVICES]
    not_flowing = Unavailable("live events are not flowing; retry shortly")
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            await services.live.wait_ready()
    except TimeoutError:
        raise not_flowing from None
    store = request.app[STORE]
    cid = await store.customers.ensure(channel, session.external_id)
    connection = Connection(request, ws, adapter, session, cid)
    with services.live.listen(cid) as listener:
        # Open only once what is published from now on reaches this socket: a reply
        # stored after the client saw the socket open must be written to it.
        try:
            async with asyncio.timeout(READY_TIMEOUT_S):
                await listener.started()
        except TimeoutError:
            raise not_flowing from None
        await present(store, cid, channel, connection.socket_id)
        try:
            await ws.prepare(request)
            sockets = request.app.get(SOCKETS)
            if sockets is not None:
                sockets.add(ws)
            await connection.run(listener)
        finally:
            with contextlib.suppress(*REDIS_DOWN):
                await asyncio.shield(absent(store, cid, channel, connection.socket_id))
    return ws


def _remember(seen: OrderedDict[str, Any], key: str, value: Any = None) -> None:
    seen[key] = value
    while len(seen) > REMEMBER:
        seen.popitem(last=False)


def _client_msg_id(data: str) -> str | None:
    """The client_msg_id of a frame that failed, so the client can match the error."""
    try:
        frame = msgspec.json.decode(data)
    except (msgspec.DecodeError, RecursionError):
        return None
    value = frame.get("client_msg_id") if isinstance(frame, dict) else None
    return value if isinstance(value, str) and len(value) <= 128 else None


class Connection:
    """One client socket: its frames in, its customer's events out."""

    def __init__(
        self,
        request: web.Request,
        ws: web.WebSocketResponse,
        adapter: ClientChannel,
        session: Session,
        cid: str,
    ) -> None:
        services = request.app[SERVICES]
        self.store = request.app[STORE]
        self.inbox = services.inbox
        self.limiter = request.app[LIMITER]
        self.live = services.live
        self.ws = ws
        self.adapter = adapter
        self.session = session
        self.cid = cid
        self.channel = adapter.channel
        self.socket_id = uuid.uuid4().hex
        self._writing = asyncio.Lock()
        self._written: OrderedDict[str, None] = OrderedDict()
        # Replies written before the worker said "sent" (id -> channel message id), and
        # "sent" said before the reply was written here.
        self._awaiting: OrderedDict[str, str] = OrderedDict()
        self._sent_early: OrderedDict[str, bool] = OrderedDict()

    async def run(self, listener: Listener) -> None:
        pump = asyncio.create_task(self._pump(listener), name="omni-socket-pump")
        try:
            async for frame in self.ws:
                if frame.type is WSMsgType.TEXT:
                    await self._frame(frame.data)
                elif frame.type is WSMsgType.BINARY:
                    await self._send(self.adapter.render_error(BadRequest("send JSON text frames")))
        except ConnectionError:
            pass  # the client went away mid-answer
        except Exception:
            log.exception("socket failed", channel=self.channel)
            await self.ws.close(code=WSCloseCode.INTERNAL_ERROR, message=b"reconnect and resume")
        finally:
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)

    # -- from the client ------------------------------------------------------------------

    async def _frame(self, data: str) -> None:
        try:
            frame = self.adapter.parse_frame(data, self.session)
        except Unauthenticated as problem:
            await self._send(self.adapter.render_error(problem))
            await self.ws.close(code=CLOSE_UNAUTHENTICATED, message=b"not this session")
            return
        except ProblemError as problem:
            await self._send(self.adapter.render_error(problem, _client_msg_id(data)))
            return
        try:
            await self._handle(frame)
        except ProblemError as refused:
            await self._send(self.adapter.render_error(refused, _client_msg_id(data)))
        except REDIS_DOWN:
            down = Unavailable("the store is unreachable; send again shortly")
            await self._send(self.adapter.render_error(down, _client_msg_id(data)))
        except ConnectionError:
            raise  # the client is gone: nothing to answer
        except Exception:
            log.exception("socket frame failed", channel=self.channel)
            failed = ProblemError("an unexpected error; send again")
            await self._send(self.adapter.render_error(failed, _client_msg_id(data)))

    async def _handle(self, frame: InboundFrame) -> None:
        if isinstance(frame, Received):
            await self.limiter.identity(self.channel, frame.message.external_id)  # 429 frame
            message, _ = await self.inbox.ingest(frame.message)
            client_msg_id = frame.message.channel_message_id
            async with self._writing:
                _remember(self._written, message.id)  # its live echo is not written back
                await self.ws.send_str(self.adapter.render_ack(client_msg_id, message.id))
        elif isinstance(frame, Resume):
            await self._replay(frame.after)
        elif isinstance(frame, Typing):
            typing = {"channel": self.channel, "from": "customer", "state": frame.state}
            await self.live.publish(self.cid, "typing", typing)
        elif isinstance(frame, Marked):
            await self._read_up_to(frame)
        elif isinstance(frame, Ping):
            await self._send(self.adapter.render_pong())

    async def _read_up_to(self, mark: Marked) -> None:
        """A read watermark lands on the message it names (the inbox annotates it and
        tells agents); one that names no message of ours is dropped."""
        up_to = str(mark.detail.get("up_to", ""))
        ms = ulid_ms(up_to)
        found = await locate(self.store, self.cid, self.channel, up_to, ms) if ms else None
        if found is None:
            return
        entry, owner = found
        message = await self.store.timeline.message_at(owner or self.cid, entry)
        if message is None or message.channel_message_id is None:
            return
        target = dataclasses.replace(mark, channel_message_id=message.channel_message_id)
        await self.inbox.receive(self.channel, [target])

    async def _replay(self, after: str | None) -> None:
        async with self._writing:
            start = await resolve_after(self.store, self.cid, self.channel, after)
            for _ in range(REPLAY_PAGES):
                page, more = await self.store.timeline.read_after(
                    self.cid, self.channel, after=start, limit=PAGE_MAX
                )
                for _position, message in page:
                    await self._write(message)
                if not (more and page):
                    return
                start = page[-1][0]

    # -- to the client --------------------------------------------------------------------

    async def _pump(self, listener: Listener) -> None:
        try:
            await self._events(listener)
        except asyncio.CancelledError:
            raise
        except ConnectionError:
            return  # the client went away mid-write; the reader ends the socket
        except Exception:
            log.exception("socket events failed", channel=self.channel)
            await self.ws.close(code=WSCloseCode.INTERNAL_ERROR, message=b"reconnect and resume")

    async def _events(self, listener: Listener) -> None:
        loop = asyncio.get_running_loop()
        refresh_at = loop.time() + REFRESH_S
        while not self.ws.closed:
            if listener.dropped and listener.queue.empty():
                await self.ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"fell behind")
                return
            if loop.time() >= refresh_at:
                if now_ms() >= self.session.expires_at_ms:
                    await self.ws.close(code=CLOSE_UNAUTHENTICATED, message=b"session expired")
                    return
                await present(self.store, self.cid, self.channel, self.socket_id)
                refresh_at = loop.time() + REFRESH_S
            try:
                async with asyncio.timeout(refresh_at - loop.time()):
                    event = await listener.next()
            except TimeoutError:
                continue
            await self._event(event)

    async def _event(self, event: Event) -> None:
        data = event.data
        if event.type == "message":
            try:
                message = msgspec.convert(data, Message)
            except msgspec.ValidationError:
                return
            if message.channel == self.channel:
                async with self._writing:
                    await self._write(message)
        elif event.type == "message.status" and isinstance(data, dict):
            if data.get("state") != "sent":
                return
            message_id = str(data.get("id"))
            channel_message_id = self._awaiting.pop(message_id, None)
            if channel_message_id is None:
                _remember(self._sent_early, message_id, True)
            else:
                await self._delivered(message_id, channel_message_id)
        elif event.type == "merge" and isinstance(data, dict) and data.get("source") == self.cid:
            # This visitor's record joined another customer: a new socket listens there
            # (its session's identity now names the survivor); the client reconnects.
            await self.ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"merged: reconnect")
        elif event.type == "unmerge" and isinstance(data, dict) and self._returned(data):
            # The merge that brought this visitor here was undone: their record is their
            # own again, and a new socket listens there; the client reconnects.
            await self.ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"unmerged: reconnect")
        elif event.type == "typing" and isinstance(data, dict):
            sender, state = data.get("from"), data.get("state")
            if data.get("channel") not in (None, self.channel):
                return
            if (sender == "agent" or sender == "bot") and (state == "start" or state == "stop"):
                await self._send(self.adapter.render_typing(state, sender))

    def _returned(self, data: dict[str, Any]) -> bool:
        """This socket's identity is one an undone merge gave back to its own record."""
        identities = data.get("identities")
        return isinstance(identities, list) and any(
            isinstance(i, dict)
            and i.get("channel") == self.channel
            and i.get("external_id") == self.session.external_id
            for i in identities
        )

    async def _write(self, message: Message) -> None:
        """Write one message once (the caller holds the write lock)."""
        if message.id in self._written:
            return
        await self.ws.send_str(self.adapter.render_message(message))
        _remember(self._written, message.id)
        if message.direction != "outbound" or message.channel_message_id is None:
            return
        state = message.status.state if message.status else None
        if state == "sent" or self._sent_early.pop(message.id, False):
            await self._delivered(message.id, message.channel_message_id)
        elif state in (None, "queued"):
            _remember(self._awaiting, message.id, message.channel_message_id)

    async def _delivered(self, message_id: str, channel_message_id: str) -> None:
        entry = await self.store.timeline.entry_of(self.cid, self.channel, channel_message_id)
        if entry is None:
            return
        status = MessageStatus(state="delivered", at=iso(now_ms()) or "")
        await self.store.timeline.set_status(self.cid, entry, status)
        update = {"id": message_id, **msgspec.to_builtins(status)}
        await self.live.publish(self.cid, "message.status", update)

    async def _send(self, text: str) -> None:
        async with self._writing:
            await self.ws.send_str(text)
