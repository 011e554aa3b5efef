"""Logs: one line per request with its id, route, status and time, and no personal data."""

from __future__ import annotations

import asyncio
import io
import json
import random
from typing import Any

import structlog
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from omni.app import create_app
from omni.logs import _OWN_KEYS, _SENSITIVE_KEYS, TurnWriter, _scrub, configure, redact
from omni.settings import LogSettings
from tests.conftest import BOT, make_settings


async def test_request_lines_carry_id_route_status_and_no_personal_data(
    client: TestClient,
) -> None:
    out = io.StringIO()
    configure(LogSettings(format="json", level="info"), stream=out)
    body = {
        "channel": "web",
        "external_id": "ana@example.com",
        "channel_message_id": "m-1",
        "text": "call me on +33 6 12 34 56 78 about order 4417",
    }
    response = await client.post(
        "/v1/messages", json=body, headers={**BOT, "X-Request-Id": "req-123"}
    )
    assert response.status == 201
    assert response.headers["X-Request-Id"] == "req-123"
    cid = (await response.json())["customer_id"]
    missing = await client.get(
        "/v1/customers?q=ana@example.com", headers={"Authorization": "Bearer nope-nope-nope"}
    )
    assert missing.status == 401
    await client.get(f"/v1/customers/{cid}/context", headers=BOT)
    text = out.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]
    requests = [line for line in lines if line["event"] == "request"]
    assert requests[0]["request_id"] == "req-123"
    assert requests[0]["route"] == "/v1/messages"
    assert requests[0]["status"] == 201
    assert isinstance(requests[0]["duration_ms"], float)
    assert [r["route"] for r in requests[1:]] == ["/v1/customers", "/v1/customers/{id}/context"]
    # (not the bare "4417": random request ids are hex and can contain it)
    for secret in ("ana@example.com", "+33 6 12 34 56 78", "order 4417", "about order"):
        assert secret not in text


def test_redaction_scrubs_nested_values_and_sensitive_keys() -> None:
    out = io.StringIO()
    configure(LogSettings(format="json", level="info"), stream=out)
    import structlog

    structlog.get_logger().warning(
        "odd payload",
        text="my secret words",
        detail={"email": "x@y.io", "note": "reach me at bob@corp.example or +14155550100"},
        url="http://127.0.0.1:8080/healthz",
    )
    line = json.loads(out.getvalue())
    assert line["text"] == "[redacted]"
    assert line["detail"]["email"] == "[redacted]"
    assert "bob@corp.example" not in line["detail"]["note"]
    assert "+14155550100" not in line["detail"]["note"]
    assert line["url"] == "http://127.0.0.1:8080/healthz"


class _Writes(io.StringIO):
    """A stream that counts the writes it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


async def test_a_server_writes_the_lines_of_one_loop_turn_at_once_in_order() -> None:
    out = _Writes()
    writer = TurnWriter(out)
    for n in range(3):
        writer.msg(f"line {n}")
    assert out.getvalue() == ""  # not yet: the turn is not over
    await asyncio.sleep(0)
    assert out.getvalue() == "line 0\nline 1\nline 2\n"
    assert out.writes == 1
    writer.msg("next turn")
    await asyncio.sleep(0)
    assert out.getvalue().endswith("line 2\nnext turn\n")


def test_outside_an_event_loop_a_line_is_written_at_once() -> None:
    out = io.StringIO()
    TurnWriter(out).msg("omni stopped")
    assert out.getvalue() == "omni stopped\n"


async def test_a_server_configuration_logs_through_the_turn_writer() -> None:
    out = io.StringIO()
    configure(LogSettings(format="json", level="info"), stream=out, cache=True)
    try:
        structlog.get_logger("omni.test").info("hello", text="secret words")
        await asyncio.sleep(0)
        line = json.loads(out.getvalue())
        assert (line["event"], line["text"], line["level"]) == ("hello", "[redacted]", "info")
        assert line["timestamp"].endswith("Z")
    finally:
        configure(LogSettings(format="json", level="info"))


async def test_a_server_writes_its_request_lines_as_structlog_would(
    aiohttp_client: Any, redis_url: str, redis: Redis
) -> None:
    """`omni serve` writes its request lines without structlog's chain (configure's own
    writer): line for line what structlog writes for the same requests, key order
    included, the request's context (its id, a channel's name) merged in and redacted."""
    served, logged = io.StringIO(), io.StringIO()
    settings = make_settings(redis_url, instagram={"app_secret": "s" * 32, "verify_token": "t"})
    own = configure(LogSettings(format="json", level="info"), stream=served, cache=True)
    configure(LogSettings(format="json", level="info"), stream=logged)
    try:
        clients = [
            await aiohttp_client(create_app(settings, request_line=own)),
            await aiohttp_client(create_app(settings)),
        ]
        for n, client in enumerate(clients):
            body = {"channel": "web", "external_id": f"ana-{n}@example.com",
                    "channel_message_id": "m-1", "text": "hi"}  # fmt: skip
            asked = [
                client.post("/v1/messages", json=body, headers={**BOT, "X-Request-Id": "r-1"}),
                client.get("/v1/nowhere", headers={"X-Request-Id": "r-2"}),
                client.post(  # a channel's handler binds its name: merged in, as structlog does
                    "/channels/instagram/webhook", data=b"{}", headers={"X-Request-Id": "r-3"}
                ),
            ]
            assert [(await answer).status for answer in asked] == [201, 404, 401]
        await asyncio.sleep(0)  # the turn writer's lines are written once the turn ends
    finally:
        configure(LogSettings(format="json", level="info"))

    def requests(out: io.StringIO) -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in out.getvalue().splitlines()]
        return [line for line in lines if line["event"] == "request"]

    ours, theirs = requests(served), requests(logged)
    assert [line["request_id"] for line in ours] == ["r-1", "r-2", "r-3"]
    assert ours[2]["channel"] == "instagram"
    assert [list(line) for line in ours] == [list(line) for line in theirs]
    for mine, its in zip(ours, theirs, strict=True):
        assert mine["timestamp"].endswith("Z") and isinstance(mine["duration_ms"], float)
        for varies in ("timestamp", "duration_ms"):
            del mine[varies], its[varies]
    assert ours == theirs


def _redacted_key_by_key(event: dict[str, object]) -> dict[str, object]:
    """What `redact` did before it skipped omni's own keys by a set difference: every
    key in turn, a sensitive one replaced, any other but omni's own scrubbed."""
    out = dict(event)
    for key, value in out.items():
        if key in _SENSITIVE_KEYS:
            out[key] = "[redacted]"
        elif key not in _OWN_KEYS:
            out[key] = _scrub(value)
    return out


def test_redaction_of_generated_events_is_key_by_key_redaction() -> None:
    rng = random.Random(16)
    keys = [*_SENSITIVE_KEYS, *_OWN_KEYS, "url", "detail", "reason", "error", "channel"]
    values: list[object] = ["ana@example.com", "+33 6 12 34 56 78", "order 4417", 3, None,
                            2.5, {"email": "x@y.io", "note": "bob@corp.example"},
                            ["call 14155550100", {"text": "secret"}], "plain"]  # fmt: skip
    for _ in range(2000):
        event = {rng.choice(keys): rng.choice(values) for _ in range(rng.randrange(12))}
        expected = _redacted_key_by_key(event)
        result = redact(None, "info", dict(event))
        assert json.dumps(result) == json.dumps(expected), event
