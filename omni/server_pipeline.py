"""The pipeliner's pipelines on one Redis server, over connections of its own: every
command packed by hiredis and written at once, the replies read by a hiredis Reader of
the connection's own, then given the reply redis-py would have given.

redis-py's Pipeline costs, for each pipeline, a pipeline object, a pool checkout and
release (a lock, a retry wrapper, a health check), and for each command an encoder call
per argument, a parser coroutine and a response-parsing coroutine: a fifth of omni's CPU
on every hot request. Here a pipeline is one `pack_command` per command, one write, and
reads until every reply is in; what redis-py does with a reply it still does, through
its own pieces: the client's response callbacks with the command's options, its parser's
error classes (a NoScriptError is one, for `Batch.settle`), its Connection's connect and
handshake (AUTH, HELLO, SELECT, CLIENT SETNAME, all from the pool's connection kwargs).

A connection (a `Lane`) is taken from the client's pool the first time no lane is idle,
and kept: the pool still counts it, so the client's bound and the client's close hold
(closing the pool closes it). One pipeline at a time on a lane, so pipelines in flight
at once each have their own and a deadline or a cancellation drops only its own lane
(its replies unread), which reconnects on its next pipeline. A pool of N connections
has at most N - 1 lanes: a pipeline that finds them all busy goes through redis-py's
pipeline (`Lanes.available`), which waits for the last one as the pool makes it.

Why lanes rather than one connection for every pipeline, its replies read in order by
the pipelines queued on it: a deadline or a cancellation would then drop every pipeline
in flight, not its own, and reading for others takes a reader task of its own.
"""

from __future__ import annotations

import inspect
from typing import Any

import hiredis
from redis._parsers.response_callbacks import _get_response_callback
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.connection import AbstractConnection, Connection, UnixDomainSocketConnection
from redis.client import EMPTY_RESPONSE, NEVER_DECODE
from redis.commands import AsyncCoreCommands, AsyncRedisModuleCommands, AsyncSentinelCommands
from redis.credentials import StreamingCredentialProvider
from redis.exceptions import ConnectionError, DataError, InvalidResponse, ResponseError

# A command's arguments as redis-py builds them, and its options for the reply.
Queued = tuple[tuple[Any, ...], dict[str, Any]]

_NOT_ENOUGH = object()  # hiredis's "no whole reply yet" (False is a RESP3 reply)
_READ_SIZE = 65536
# The connection classes whose streams are plain asyncio streams, set by redis-py's own
# connect. SSL (and any subclass) goes through redis-py: untested here.
_PLAIN = (Connection, UnixDomainSocketConnection)


class Recorder:
    """What a class of redis-py's command methods needs to record each command (as
    redis-py's Pipeline queues it) instead of sending it; mixed in before them."""

    _event_dispatcher: Any = None  # redis-py's typing asks every command holder for one

    def __init__(self) -> None:
        self.queue: list[Queued] = []

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.queue.append((args, options))
        return self


# As redis-py's own Redis class mixes them (its typing of command_info differs by mixin).
class Commands(  # type: ignore[misc]
    Recorder, AsyncRedisModuleCommands, AsyncCoreCommands, AsyncSentinelCommands
):
    """redis-py's command methods of a single-server client, recorded (`Recorder`)."""


def usable(redis: Redis) -> bool:
    """Whether `redis` is a client of one server that `Lanes` can speak to."""
    if not isinstance(redis, Redis) or isinstance(redis, RedisCluster):
        return False  # a cluster (omni.cluster_pipeline), or a stand-in (bench.seed's)
    pool = redis.connection_pool
    kwargs = pool.connection_kwargs
    return (
        pool.connection_class in _PLAIN
        and not kwargs.get("redis_connect_func")
        and not kwargs.get("cache")  # client-side caching reads every reply itself
        # A token that changes (re-authenticated on the pool's connections as they read).
        and not isinstance(kwargs.get("credential_provider"), StreamingCredentialProvider)
    )


class Lane:
    """One connection of the pool's, held by `Lanes`, with the reader of its replies."""

    __slots__ = ("connection", "parse")

    def __init__(self, connection: AbstractConnection) -> None:
        self.connection = connection
        self.parse = _reader(connection)

    def ready(self) -> bool:
        """Connected, and not closed by the server while idle (a restart, a timeout)."""
        stream = self.connection._reader
        writer = self.connection._writer
        return not (
            stream is None
            or writer is None
            or writer.transport.is_closing()
            or stream.at_eof()
            or stream.exception() is not None
            or self.connection.should_reconnect()  # type: ignore[no-untyped-call]
        )

    async def connect(self) -> None:
        """Connect again through redis-py (its handshake), with a new reader."""
        if self.connection.is_connected:
            await self.connection.disconnect(nowait=True)
        await self.connection.connect()  # type: ignore[no-untyped-call]
        self.parse = _reader(self.connection)

    def write(self, packed: bytes) -> None:
        """A pipeline's commands, written whole (no drain: its replies are read next)."""
        writer = self.connection._writer
        assert writer is not None  # ready()
        writer.write(packed)

    def drop(self) -> None:
        """Close the connection now, its replies unread (it connects again when next used)."""
        writer = self.connection._writer
        if writer is not None:
            writer.transport.abort()


def _reader(connection: AbstractConnection) -> hiredis.Reader:
    """A reader of `connection`'s replies, as redis-py's hiredis parser makes its own."""
    encoder = connection.encoder
    kwargs: dict[str, Any] = {
        "protocolError": InvalidResponse,
        "replyError": connection._parser.parse_error,
        "notEnoughData": _NOT_ENOUGH,
    }
    if encoder.decode_responses:
        kwargs["encoding"] = encoder.encoding
        kwargs["errors"] = encoder.encoding_errors
    return hiredis.Reader(**kwargs)


class Lanes:
    """The pipelines of one single-server client (`usable`), each over a lane."""

    def __init__(self, redis: Redis) -> None:
        self.pool = redis.connection_pool
        self.callbacks = redis.response_callbacks
        self.encoder = self.pool.get_encoder()  # type: ignore[no-untyped-call]
        # hiredis encodes a str as UTF-8, strictly: with any other encoding every
        # argument goes through redis-py's encoder first.
        self._utf8 = (self.encoder.encoding, self.encoder.encoding_errors) in (
            ("utf-8", "strict"),
            ("utf8", "strict"),
        )
        self._idle: list[Lane] = []
        self._lanes = 0
        # One connection of the pool's is never a lane (see the module's docstring).
        self._most = self.pool.max_connections - 1

    def available(self) -> bool:
        """Whether a pipeline can have a lane now (else: redis-py's pipeline)."""
        return bool(self._idle) or self._lanes < self._most

    async def execute(self, queue: list[Queued]) -> list[Any]:
        """Every command's reply, in order, as redis-py's `execute(raise_on_error=False)`
        gives it: error replies as values; a failed connection raised (redis's
        ConnectionError), the lane dropped, as it is when this is cancelled."""
        packed = self.pack(queue)  # a DataError before anything is sent
        lane = await self._take()
        try:
            if not lane.ready():
                await lane.connect()
            lane.write(packed)
        except BaseException:
            lane.drop()
            self._idle.append(lane)
            raise
        return await self.finish(lane, queue)

    def start(self, queue: list[Queued]) -> Lane | None:
        """`execute`'s sending half, done now when a lane is idle and connected: the
        pipeline is on its way before the caller's turn of the event loop ends, and
        `finish` reads its replies. None when it cannot be (no such lane, or a command
        that does not pack): `execute` does it all then, and says why if it fails."""
        if not self._idle or not self._idle[-1].ready():
            return None
        try:
            packed = self.pack(queue)
        except DataError:
            return None
        lane = self._idle.pop()
        lane.write(packed)
        return lane

    async def finish(self, lane: Lane, queue: list[Queued]) -> list[Any]:
        """The replies of the pipeline written on `lane` (`start`), as `execute`'s."""
        try:
            raw = await self._read(lane, queue)
        except BaseException:
            # Replies may be on their way: the next pipeline must not read them.
            lane.drop()
            self._idle.append(lane)
            raise
        self._idle.append(lane)
        return await self._answer(lane.connection, raw, queue)

    async def _take(self) -> Lane:
        if self._idle:
            return self._idle.pop()
        self._lanes += 1
        try:
            # Connected, handshake done; kept checked out for good (the pool's close
            # closes it).
            return Lane(await self.pool.get_connection())  # type: ignore[no-untyped-call]
        except BaseException:
            self._lanes -= 1
            raise

    def pack(self, queue: list[Queued]) -> bytes:
        pack = hiredis.pack_command
        packed = []
        for args, _ in queue:
            name = args[0]
            if " " in name if isinstance(name, str) else b" " in name:
                # A name of two words (CONFIG GET): sent as two arguments, as redis-py does.
                args = (*name.split(), *args[1:])
            if self._utf8:
                try:
                    packed.append(pack(args))
                    continue
                except TypeError:
                    pass  # redis-py's encoder says why (or encodes a bytearray)
            encode = self.encoder.encode
            encoded = tuple(
                bytes(arg) if isinstance(arg, bytearray) else encode(arg) for arg in args
            )
            try:
                packed.append(pack(encoded))  # type: ignore[arg-type]
            except TypeError as exc:
                raise DataError(exc) from exc
        return b"".join(packed)

    async def _read(self, lane: Lane, queue: list[Queued]) -> list[Any]:
        connection = lane.connection
        stream = connection._reader
        assert stream is not None  # lane.ready()
        parse = lane.parse
        gets = parse.gets
        raw: list[Any] = []
        count = len(queue)
        # NEVER_DECODE (a reply kept as bytes) only means something when replies are decoded.
        decoding = connection.encoder.decode_responses
        while len(raw) < count:
            reply = gets(NEVER_DECODE not in queue[len(raw)][1]) if decoding else gets()
            if reply is _NOT_ENOUGH:
                try:
                    data = await stream.read(_READ_SIZE)
                except OSError as exc:
                    raise ConnectionError(
                        f"Error while reading from {connection._host_error()} : {exc.args}"
                    ) from exc
                if not data:
                    raise ConnectionError("Connection closed by server.")
                parse.feed(data)
            elif isinstance(reply, hiredis.PushNotification):
                continue  # RESP3 out-of-band news (none asked for): not a reply
            elif isinstance(reply, ConnectionError):
                raise reply  # what redis-py's parser raises rather than returns (LOADING)
            elif isinstance(reply, list) and reply and isinstance(reply[0], ConnectionError):
                raise reply[0]
            else:
                raw.append(reply)
        return raw

    async def _answer(
        self, connection: AbstractConnection, raw: list[Any], queue: list[Queued]
    ) -> list[Any]:
        """redis-py's `Redis.parse_response` for each reply."""
        callbacks = self.callbacks
        fallback = getattr(connection, "_resp2_fallback", False)
        replies: list[Any] = []
        for reply, (args, options) in zip(raw, queue, strict=True):
            if isinstance(reply, ResponseError):
                replies.append(options.get(EMPTY_RESPONSE, reply))
                continue
            if options:
                options.pop(EMPTY_RESPONSE, None)
                options.pop(NEVER_DECODE, None)
                options.pop("keys", None)  # for redis-py's client-side cache only
            name = args[0]
            callback = (
                _get_response_callback(callbacks, name, connection)
                if fallback
                else callbacks.get(name)
            )
            if callback is not None:
                reply = callback(reply, **options)
                if inspect.isawaitable(reply):
                    reply = await reply
            replies.append(reply)
        return replies
