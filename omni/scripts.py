"""omni's Lua scripts (omni/lua/*.lua): loaded by name, run alone or in a `Batch`."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import NoScriptError


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


def load(redis: Redis, name: str) -> Script:
    """The script omni/lua/<name>.lua, for `redis`."""
    return Script(redis, resources.files("omni").joinpath(f"lua/{name}.lua").read_text())


class Batch:
    """Independent commands, of any slots, sent in one round trip.

    Scripts go by EVALSHA: a redis-py pipeline given Script objects asks SCRIPT EXISTS
    first, one more round trip every time. When the server has forgotten a script (a
    restart), every script of the batch runs again, alone and in the order given, so
    only scripts that are idempotent may be put in a batch; the plain commands are not
    repeated.
    """

    def __init__(self, redis: Redis) -> None:
        self.pipe: Pipeline = redis.pipeline(transaction=False)
        self._scripts: list[tuple[int, Script, Sequence[Any], Sequence[Any]]] = []

    def script(self, script: Script, keys: Sequence[Any], args: Sequence[Any]) -> None:
        self._scripts.append((len(self.pipe), script, keys, args))
        self.pipe.evalsha(script.sha, len(keys), *keys, *args)

    async def execute(self) -> list[Any]:
        async with self.pipe as pipe:
            results: list[Any] = await pipe.execute(raise_on_error=False)
        if any(isinstance(results[at], NoScriptError) for at, *_ in self._scripts):
            for at, script, keys, args in self._scripts:
                results[at] = await script(keys=keys, args=args)
        for result in results:
            if isinstance(result, Exception):
                raise result
        return results
