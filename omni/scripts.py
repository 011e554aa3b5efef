"""omni's Lua scripts: loaded by name, run alone or in a `Batch`.

A script sits beside the code that calls it: the store's rooms' in omni/store/ (append,
write_field), the other modules' (outbox, delivery, handoff, merge, erasure; each file
named after its module) in omni/lua/.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import Sequence
from importlib import resources
from typing import Any, cast

import structlog
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.client import Pipeline
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeout

from omni import cluster_pipeline, server_pipeline

log = structlog.get_logger("omni.scripts")


class Script:
    """A Lua script run by SHA, its source sent only when the server does not know it.

    redis-py's own Script does the same, plus an isinstance check against its Pipeline
    (a Protocol check, slow) on every call: a tenth of a context read's time in redis-py.
    """

    def __init__(self, redis: Redis, source: str) -> None:
        self.redis = redis
        self.source = source
        # SHA-1 because that is how Redis names scripts, not for security.
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    async def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        try:
            return await self.redis.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await self.redis.script_load(self.source)
            return await self.redis.evalsha(self.sha, len(keys), *keys, *args)


def load(redis: Redis, name: str, folder: str = "lua") -> Script:
    """The script omni/<folder>/<name>.lua, for `redis`."""
    return Script(redis, _source(folder, name))


@functools.cache
def _source(folder: str, name: str) -> str:
    # Read once per process: a merge or an erasure loads its script each time it runs.
    return resources.files("omni").joinpath(f"{folder}/{name}.lua").read_text()


# A redis-py pipeline method's name and its arguments.
Command = tuple[str, tuple[Any, ...], dict[str, Any]]
# The commands `Batch.raw` may stage, and the option that asks their response callback
# (`answer_raw`) for the reply as the server sent it.
RAW_COMMANDS = ("XRANGE", "XREVRANGE")
_RAW = "omni_raw"


def answer_raw(redis: Redis) -> None:
    """Let `Batch.raw`'s commands skip `redis`'s response callback: redis-py's turns an
    XREVRANGE's every entry into a tuple and a dict of its fields, ~30 µs of a history
    page of 51 entries, which the timeline reads by position (omni.store.entries) from
    the nested lists hiredis gives. Every other use of the client is unchanged: the
    callbacks answer as before unless a command carries the option. Idempotent."""
    callbacks = redis.response_callbacks
    for name in RAW_COMMANDS:
        parse = callbacks.get(name)
        if parse is not None and not isinstance(parse, _UnlessRaw):
            callbacks[name] = _UnlessRaw(parse)


class _UnlessRaw:
    """A response callback that hands the reply back as it is to a `Batch.raw` command."""

    def __init__(self, parse: Any) -> None:
        self.parse = parse

    def __call__(self, response: Any, **options: Any) -> Any:
        if options.pop(_RAW, False):
            return response
        return self.parse(response, **options)


class Batch:
    """Independent commands, of any slots, sent in one round trip, in the order given.

    In the order given on one server; a cluster client sends each node its share in
    parallel, so there what one node runs is not ordered with what another runs.
    A command that must follow the others (a doorbell saying "read the stream now"
    after the XADD it is about) is staged with `then`: it is sent after every other
    command of the batch has been answered (on one server, in the same round trip,
    after them; on a cluster, in a second round trip shared by the batches sent
    together, or, through the Pipeliner, at the head of its next pipeline, and the
    batch is answered without waiting for it: its reply is None).

    Scripts go by EVALSHA: a redis-py pipeline given Script objects asks SCRIPT EXISTS
    first, one more round trip every time. When the server has forgotten a script (a
    restart), every script of the batch runs again, alone and in the order given, so
    only scripts that are idempotent may be put in a batch; the plain commands are not
    repeated.
    """

    def __init__(self) -> None:
        self.commands: list[Command] = []
        self.then_commands: list[Command] = []
        self._scripts: list[tuple[int, Script, Sequence[Any], Sequence[Any]]] = []

    def command(self, name: str, *args: Any, **kwargs: Any) -> None:
        self.commands.append((name, args, kwargs))

    def raw(self, name: str, *args: Any) -> None:
        """A command (one of RAW_COMMANDS, with its arguments as Redis spells them) whose
        reply comes as the server sent it, nested lists of bytes, without redis-py's
        response callback; through a Pipeliner, or a client given to `answer_raw`."""
        assert name in RAW_COMMANDS, name
        self.commands.append(("execute_command", (name, *args), {_RAW: True}))

    def then(self, name: str, *args: Any, **kwargs: Any) -> None:
        """A command run only once every other command of the batch has run; its reply
        comes after theirs."""
        self.then_commands.append((name, args, kwargs))

    @property
    def size(self) -> int:
        """How many replies the batch has."""
        return len(self.commands) + len(self.then_commands)

    @property
    def scripted(self) -> bool:
        """Whether the batch runs a script (work that costs Redis the most)."""
        return bool(self._scripts)

    def script(self, script: Script, keys: Sequence[Any], args: Sequence[Any]) -> None:
        self._scripts.append((len(self.commands), script, keys, args))
        self.command("evalsha", script.sha, len(keys), *keys, *args)

    def stage(self, pipe: Pipeline, *, then: bool = True) -> None:
        """The batch's commands into `pipe` (and the `then` ones after them, unless
        they go in a pipeline of their own)."""
        _stage(pipe, self.commands)
        if then:
            _stage(pipe, self.then_commands)

    async def settle(self, results: list[Any]) -> list[Any]:
        """The batch's replies from the pipeline's (its own slice, in order): forgotten
        scripts run again; any other error is raised."""
        if any(isinstance(results[at], NoScriptError) for at, *_ in self._scripts):
            for at, script, keys, args in self._scripts:
                results[at] = await script(keys=keys, args=args)
        for result in results:
            if isinstance(result, Exception):
                raise result
        return results

    async def execute(self, redis: Redis) -> list[Any]:
        return await self.settle(await _pipelined(redis, [self]))


def _stage(pipe: Pipeline, commands: Sequence[Command]) -> None:
    for name, args, kwargs in commands:
        getattr(pipe, name)(*args, **kwargs)


def _replies(
    batches: Sequence[Batch], replies: list[Any], at: int, then: list[Any] | None
) -> list[Any]:
    """Each batch's replies in turn, from a pipeline of their own commands (from `at`)
    and one of their `then` commands (None: not sent yet, a None for each)."""
    merged: list[Any] = []
    then_at = 0
    for batch in batches:
        merged += replies[at : at + len(batch.commands)]
        at += len(batch.commands)
        count = len(batch.then_commands)
        merged += then[then_at : then_at + count] if then is not None else [None] * count
        then_at += count
    return merged


def _queued(batches: Sequence[Batch]) -> list[server_pipeline.Queued]:
    """The batches' commands (each batch's `then` ones after its own), as redis-py
    queues them."""
    commands = server_pipeline.Commands()
    for batch in batches:
        batch.stage(cast(Pipeline, commands))
    return commands.queue


async def _pipelined(redis: Redis, batches: Sequence[Batch]) -> list[Any]:
    """The batches' commands as one pipeline: every reply, errors as values, each
    batch's together (its `then` commands' last). On a cluster, the `then` commands
    go in a second pipeline, once the first has been answered by every node; each
    pipeline node by node (omni.cluster_pipeline), as the Pipeliner's."""
    split = isinstance(redis, RedisCluster) and any(b.then_commands for b in batches)
    async with cluster_pipeline.pipeline(redis) as pipe:
        for batch in batches:
            batch.stage(pipe, then=not split)
        results: list[Any] = await pipe.execute(raise_on_error=False)
    if not split:
        return results
    async with cluster_pipeline.pipeline(redis) as pipe:
        for batch in batches:
            _stage(pipe, batch.then_commands)
        later: list[Any] = await pipe.execute(raise_on_error=False)
    return _replies(batches, results, 0, later)


# A turn's pipeline goes out early once it holds this many batches that run a script,
# the rest of the turn in another (`Pipeliner.submit`). Redis answers a pipeline once
# all of it has run, and a script costs it ten times a plain command (append.lua about
# 90 us): under a load of ingests, one pipeline a turn made omni and Redis take turns,
# each idle while the other worked (omni used 0.8 of its core, Redis 0.25 of its own).
# In one bench run (omni / baseline, /v1/messages and Instagram ingest): one pipeline a
# turn 0.62 / 0.52; early after 6, 8, 12 or 20 such batches 0.70-0.77 / 0.59-0.62, the
# same within the run's noise. Reads (no script) keep one pipeline a turn: their turns
# cost Redis little, and a pipeline more costs omni CPU they are short of.
_EARLY_SCRIPTS = 12


class Pipeliner:
    """Redis work from concurrent requests, sent together: the batches submitted in one
    event-loop turn go to Redis as one pipeline, each batch's commands together and in
    order. What a round trip costs in redis-py and asyncio (a pool checkout, a timeout,
    the reply parsing) is then paid once a turn rather than once a request: under load,
    when it matters, a turn holds many requests. Held by the Store; one per client.

    A pipeline that Redis does not answer within `timeout_s` fails its callers with
    redis's TimeoutError (and its connection is dropped). That one deadline per pipeline
    can stand in for the client's per-reply socket timeout, which costs a timer for each
    reply of the pipeline: `omni.app` gives the pipeliner a client without one.

    On one server the pipelines go over connections of the pipeliner's own
    (omni.server_pipeline), answered as redis-py would; through redis-py's pipeline
    when that cannot speak to the client's server (SSL) or has no connection to spare.
    """

    def __init__(self, redis: Redis, timeout_s: float = 10.0) -> None:
        self.redis = redis
        self.timeout_s = timeout_s
        answer_raw(redis)
        self._waiting: list[tuple[Batch, asyncio.Future[list[Any]]]] = []
        self._sending: set[asyncio.Task[None]] = set()
        self._counts: dict[str, _Count] = {}  # this turn's `count` hits, by counter
        # On a cluster, the `then` commands of a pipeline answered already: they go at the
        # head of the next one, which starts after theirs was answered, so their order
        # holds without a pipeline of their own each flush (redis-py runs a cluster
        # pipeline as a task a node: under load a second one a flush cost an ingest
        # about a third more CPU). Nothing waits for their replies.
        self._cluster = isinstance(redis, RedisCluster)
        self._lanes = server_pipeline.Lanes(redis) if server_pipeline.usable(redis) else None
        self._later: list[Command] = []
        self._scheduled = False
        self._scripted = 0  # of this turn's batches waiting, those that run a script

    async def run(self, batch: Batch) -> list[Any]:
        return await self.submit(batch)

    def submit(self, batch: Batch) -> asyncio.Future[list[Any]]:
        """`run` without waiting: the batch goes in this turn's pipeline, its replies
        come in the future returned (so a caller can stage more work before it waits)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        self._waiting.append((batch, future))
        if batch.scripted and self._lanes is not None:
            self._scripted += 1
            if self._scripted >= _EARLY_SCRIPTS:
                self._flush(early=True)  # written now: Redis starts while this turn goes on
                return future
        self._schedule(loop)
        return future

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)

    async def script(self, script: Script, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        batch = Batch()
        batch.script(script, keys, args)
        return (await self.run(batch))[0]

    def count(self, key: str, expire_ms: int) -> asyncio.Future[list[Any]]:
        """INCR `key` and PEXPIRE it (NX) in this turn's pipeline; the future gets
        [the count after this increment, PEXPIRE's reply]. The hits of one turn on one
        key go as one INCRBY and one PEXPIRE, each answered with the count it would have
        had as an INCR of its own, in the order staged: under load a turn holds many
        requests of the same API key, and two commands each cost a read a tenth of its
        CPU in redis-py."""
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        pending = self._counts.get(key)
        if pending is None:
            pending = self._counts[key] = _Count(key, expire_ms)
            # Runs no script, so this submit never sends the pipeline early.
            self.submit(pending.batch).add_done_callback(pending.answer)
        pending.hits.append(future)
        return future

    def _flush(self, early: bool = False) -> None:
        self._scheduled = False
        self._scripted = 0
        counts, self._counts = self._counts, {}
        for pending in counts.values():
            pending.close()
        waiting, self._waiting = self._waiting, []
        later, self._later = self._later, []
        if not waiting and not later:
            return
        # Sent early (`submit`): written here when a lane is free for it, so it is on
        # its way before the turn ends. At a turn's end the task writes it, as before
        # (written here too, the ingests gained less: 0.70 against 0.77 in one run).
        queue = None
        lane = None
        if early and self._lanes is not None:
            queue = _queued([batch for batch, _ in waiting])
            lane = self._lanes.start(queue)
        task = asyncio.create_task(self._send(waiting, later, queue, lane))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(
        self,
        waiting: list[tuple[Batch, asyncio.Future[list[Any]]]],
        later: list[Command],
        queue: list[server_pipeline.Queued] | None = None,
        lane: server_pipeline.Lane | None = None,
    ) -> None:
        """The pipeline's replies to their batches; `queue`: their commands, recorded
        already (`_flush`), and written already on `lane` when there is one."""
        batches = [batch for batch, _ in waiting]
        try:
            async with asyncio.timeout(self.timeout_s):
                if self._lanes is not None and lane is not None and queue is not None:
                    results = await self._lanes.finish(lane, queue)
                elif self._cluster:
                    results = await self._pipelined_later(batches, later)
                elif self._lanes is not None and self._lanes.available():
                    results = await self._lanes.execute(
                        _queued(batches) if queue is None else queue
                    )
                else:
                    results = await _pipelined(self.redis, batches)
        except BaseException as exc:
            if later:
                log.warning("doorbells not sent", count=len(later), error=type(exc).__name__)
            failure = exc
            if isinstance(exc, TimeoutError):  # the deadline: as redis-py says it
                failure = RedisTimeout(f"Redis did not answer within {self.timeout_s} s")
            for _, future in waiting:
                if not future.done():
                    future.set_exception(failure)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        at = 0
        for batch, future in waiting:
            mine = results[at : at + batch.size]
            at += batch.size
            try:
                settled = await batch.settle(mine)
            except Exception as exc:
                if not future.done():
                    future.set_exception(exc)
            else:
                if not future.done():
                    future.set_result(settled)
        if self._later:
            # Scheduled after the answers: the requests they wake run first, and what
            # they submit next carries the doorbells; with nothing submitted, the
            # doorbells go alone.
            self._schedule(asyncio.get_running_loop())

    async def _pipelined_later(self, batches: list[Batch], later: list[Command]) -> list[Any]:
        """`_pipelined` on a cluster: the earlier pipelines' `then` commands first, the
        batches' own commands, and their `then` commands kept for the next pipeline (a
        None in their place in each batch's replies)."""
        async with cluster_pipeline.pipeline(self.redis) as pipe:
            _stage(pipe, later)
            for batch in batches:
                batch.stage(pipe, then=False)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        failed = [r for r in replies[: len(later)] if isinstance(r, Exception)]
        if failed:
            log.warning("doorbells not sent", count=len(failed), error=type(failed[0]).__name__)
        for batch in batches:
            self._later += batch.then_commands
        return _replies(batches, replies, len(later), None)


class _Count:
    """One turn's hits on one counter (`Pipeliner.count`): a batch whose INCRBY says how
    many once the turn is over, and the hits' futures."""

    def __init__(self, key: str, expire_ms: int) -> None:
        self.key = key
        self.expire_ms = expire_ms
        self.batch = Batch()
        self.hits: list[asyncio.Future[list[Any]]] = []

    def close(self) -> None:
        """The turn is over: the batch's commands, for as many hits as it had."""
        self.batch.command("incrby", self.key, len(self.hits))
        self.batch.command("pexpire", self.key, self.expire_ms, nx=True)

    def answer(self, replies: asyncio.Future[list[Any]]) -> None:
        if replies.cancelled():
            for hit in self.hits:
                hit.cancel()
            return
        failure = replies.exception()
        if failure is not None:
            for hit in self.hits:
                if not hit.done():
                    hit.set_exception(failure)
            return
        total, expired = replies.result()
        first = int(total) - len(self.hits) + 1
        for at, hit in enumerate(self.hits):
            if not hit.done():  # a hit whose request was cancelled
                hit.set_result([first + at, expired])
