"""Logs: one line per request with its id, route, status and time, and no personal data."""

from __future__ import annotations

import io
import json

from aiohttp.test_utils import TestClient

from omni.logs import configure
from omni.settings import LogSettings
from tests.conftest import BOT


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
