"""The one request middleware: a request id, one log line per request, and the single
path from any exception to an application/problem+json response."""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from typing import Any

import msgspec
import redis.exceptions
import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Middleware

from omni.auth import Handler
from omni.errors import (
    BadRequest,
    MethodNotAllowed,
    Moved,
    NotFound,
    PayloadTooLarge,
    ProblemError,
    Unavailable,
)
from omni.logs import RequestLine

log = structlog.get_logger("omni.http")
_REQUEST_ID = re.compile(r"^[\w.-]{1,64}$")
PROBLEM_TYPE = "application/problem+json"
# Seconds a client (a channel's webhook retry, a bot) is told to wait after a 503: the
# store answers again within about that long once it is back.
RETRY_AFTER_S = 1

# Redis cannot be reached (or answer in time): what a caller that is not an HTTP handler
# (a live socket) catches to answer "unavailable" itself.
REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)

# Library exceptions that mean something to a client, found by walking the MRO.
_MAPPED: dict[type[BaseException], type[ProblemError]] = {
    redis.exceptions.ConnectionError: Unavailable,
    redis.exceptions.TimeoutError: Unavailable,
    # A Redis Cluster none of whose nodes answers, or one without a primary for a slot.
    redis.exceptions.RedisClusterUnreachableError: Unavailable,
    redis.exceptions.ClusterDownError: Unavailable,
    web.HTTPNotFound: NotFound,
    web.HTTPMethodNotAllowed: MethodNotAllowed,
    web.HTTPRequestEntityTooLarge: PayloadTooLarge,
    web.HTTPBadRequest: BadRequest,
}
_DETAIL: dict[type[ProblemError], str] = {
    Unavailable: "the store is unreachable; retry shortly",
    NotFound: "no such route",
    MethodNotAllowed: "this route does not take that method",
    PayloadTooLarge: "the body is larger than this server accepts",
    BadRequest: "the request could not be read",
}


def _mapped(exc: BaseException) -> ProblemError | None:
    for cls in type(exc).__mro__:
        problem = _MAPPED.get(cls)
        if problem is not None:
            detail = _DETAIL[problem]
            if isinstance(exc, web.HTTPRequestEntityTooLarge) and exc.text:
                detail = exc.text  # "Maximum request body size N exceeded."
            return problem(detail)
    return None


def problem_response(problem: ProblemError, request_id: str) -> web.Response:
    body = problem.to_problem()
    body["request_id"] = request_id
    response = web.Response(
        body=msgspec.json.encode(body), status=problem.status, content_type=PROBLEM_TYPE
    )
    if problem.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="omni"'
    # A 503 is always worth retrying soon, a 429 after its window: say when, so clients
    # and providers back off.
    retry = problem.retry_after_s or (RETRY_AFTER_S if problem.status == 503 else None)
    if retry is not None:
        response.headers["Retry-After"] = str(retry)
    return response


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _location(problem: Moved, request: web.Request) -> str:
    # 308 keeps the method and body, so a write to an absorbed id lands on the survivor.
    location = request.rel_url.path.replace(problem.source, problem.survivor, 1)
    if request.rel_url.query_string:
        location += "?" + request.rel_url.query_string
    return location


def _route(request: web.Request) -> str:
    info = request.match_info.route.resource
    return info.canonical if info is not None else "unmatched"


def request_middleware(line: RequestLine) -> Middleware:
    """The middleware, its request lines written by `line` (`omni.logs.configure`'s)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        supplied = request.headers.get("X-Request-Id", "")
        request_id = supplied if _REQUEST_ID.match(supplied) else os.urandom(16).hex()
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        response: web.StreamResponse
        try:
            response = await handler(request)
        except ProblemError as problem:
            response = problem_response(problem, request_id)
            if isinstance(problem, Moved):
                response.headers["Location"] = _location(problem, request)
        except web.HTTPException as exc:
            mapped = _mapped(exc)
            if mapped is None:
                raise
            response = problem_response(mapped, request_id)
            if "Allow" in exc.headers:  # a 405 names the methods the route takes (RFC 9110)
                response.headers["Allow"] = exc.headers["Allow"]
        except Exception as exc:
            mapped = _mapped(exc)
            if isinstance(exc, ConnectionResetError) and _client_gone(request):
                # The client went away before its request was read (its body cut short): no
                # error of ours, and no one to answer. The request line says so; no traceback.
                mapped = BadRequest("the client closed the connection before its request was read")
            elif mapped is None:
                log.exception("unhandled error", route=_route(request), method=request.method)
                mapped = ProblemError("an unexpected error; quote the request id when reporting it")
            elif isinstance(mapped, Unavailable):
                # Which failure it was (a timeout, a refused connection, a cluster without a
                # primary) is what an operator needs; the client only needs to retry.
                log.warning("store unavailable", error=type(exc).__name__, reason=str(exc)[:200])
            response = problem_response(mapped, request_id)
        if not response.prepared:
            response.headers["X-Request-Id"] = request_id
        line(
            request.method,
            _route(request),
            response.status,
            round((time.perf_counter() - started) * 1000, 2),
        )
        return response

    return middleware


class ParserLog(logging.Logger):
    """aiohttp's connection logger (`handler_args={"logger": ...}`). A request its HTTP
    parser refuses (a NUL or other control byte in a header, a bad request line) is
    answered 400 before any middleware runs, and aiohttp would log it with a full
    traceback through the stdlib's last-resort handler: one line here, without the
    bytes that were sent (they may be anything, personal data included). Anything else
    aiohttp reports keeps its traceback, through structlog like every other line."""

    def exception(self, msg: object, *args: object, exc_info: Any = True, **_: Any) -> None:
        exc = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        if isinstance(exc, HttpProcessingError):
            reason = str(exc.message).split(":", 1)[0].strip()[:80]
            log.warning("request refused by the HTTP parser", status=exc.code, reason=reason)
            return
        log.error("aiohttp: " + str(msg) % args, exc_info=exc)
