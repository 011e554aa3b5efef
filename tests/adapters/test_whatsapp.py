"""WhatsApp's pure parts: the [whatsapp] section as an operator writes it, the Send API
bodies a reply becomes at WhatsApp's limits, and error codes as reasons."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from adapters.whatsapp.config import Template, from_settings, parse
from adapters.whatsapp.errors import classify, graph_failure, status_reason
from adapters.whatsapp.render import interactive, render, render_read, render_template
from omni.errors import ConfigError
from omni.model import Message, Payload
from omni.settings import Settings
from tests.whatsapp_graph import INBOUND, PAYLOADS, raw, sidecar, signature


def reply(**fields: Any) -> Message:
    base: dict[str, Any] = {
        "id": "msg_1",
        "customer_id": "cus_1",
        "conversation_id": "c1",
        "channel": "whatsapp",
        "direction": "outbound",
        "author": {"kind": "agent"},
        "received_at": "2026-01-01T00:00:00Z",
    }
    return msgspec.convert({**base, **fields}, Message)


def test_the_shipped_config_takes_webhooks_and_sends_nothing_until_given_a_token() -> None:
    root = Path(__file__).parent.parent.parent
    settings = Settings.from_env({"OMNI_CONFIG": str(root / "config" / "omni.toml")})
    config = from_settings(settings)
    assert (config.inbound, config.outbound) == (True, False)
    assert config.graph_url == "https://graph.facebook.com/v22.0"
    assert config.default_template is None
    assert "dev-only" not in repr(config)  # secrets stay out of logs


def test_a_template_as_documented() -> None:
    section = {
        "app_secret": "s",
        "verify_token": "v",
        "access_token": "t",
        "phone_number_id": "106000000000001",
        "templates": {
            "default": {
                "name": "order_update",
                "language": "pt_BR",
                "parameters": ["{first_name}", "{text}"],
            }
        },
    }
    config = parse(section)
    assert config.outbound
    assert config.default_template == Template("order_update", "pt_BR", ("{first_name}", "{text}"))
    assert parse({"templates": {"default": {"name": ""}}}).default_template is None


@pytest.mark.parametrize(
    "templates",
    [
        "order_update",
        {"default": "order_update"},
        {"name": "order_update", "language": {"code": "en_US"}},
        [{"name": "order_update"}, {"name": "another"}],
        {"default": {"name": "order_update", "category": "UTILITY"}, "reminder": "x"},
    ],
)
def test_every_documented_shape_of_templates_is_the_same_default(templates: Any) -> None:
    assert parse({"templates": templates}).default_template == Template("order_update")


@pytest.mark.parametrize(
    ("section", "names"),
    [
        ({"graph_url": "graph.facebook.com"}, "whatsapp.graph_url"),
        ({"templates": 7}, "whatsapp.templates"),
        ({"templates": {"default": ["x"]}}, "whatsapp.templates.default"),
        ({"templates": {"default": {"name": ["a"]}}}, "whatsapp.templates.default.name"),
        ({"templates": {"default": {"name": "a", "language": 3}}}, ".language"),
        ({"templates": {"default": {"name": "a", "parameters": "{text}"}}}, ".parameters"),
        ({"templates": {"default": {"name": "a", "parameters": ["x"] * 11}}}, ".parameters"),
    ],
)
def test_a_bad_setting_names_itself(section: dict[str, Any], names: str) -> None:
    with pytest.raises(ConfigError, match=names.replace(".", r"\.")):
        parse(section)


def test_text_and_media_bodies() -> None:
    base = {"messaging_product": "whatsapp", "recipient_type": "individual", "to": "14155550123"}
    place = {"type": "location", "latitude": 48.85, "longitude": 2.35, "name": "Shop"}
    bodies = render(reply(text="hi", attachments=[place]), "14155550123")
    assert bodies == [
        {
            **base,
            "type": "location",
            "location": {"latitude": 48.85, "longitude": 2.35, "name": "Shop"},
        },
        {**base, "type": "text", "text": {"preview_url": False, "body": "hi"}},
    ]
    with pytest.raises(ValueError, match="nothing to send"):
        render(reply(), "1")
    with pytest.raises(ValueError, match="quick replies need text"):
        render(reply(quick_replies=[{"payload": "A"}]), "1")


def test_a_long_text_with_buttons_goes_first_and_its_end_is_the_button_body() -> None:
    text = "word " * 300 + "Which one?"
    bodies = render(reply(text=text, quick_replies=[{"payload": "A"}]), "1")
    first, buttons = bodies
    body = buttons["interactive"]["body"]["text"]
    assert len(body) <= 1024 and body.endswith("Which one?")
    assert first["text"]["body"] + " " + body == text


def test_buttons_lists_and_their_limits() -> None:
    assert interactive("?", [Payload("A", title="Yes")])["type"] == "button"
    assert interactive("?", [Payload(f"o{i}") for i in range(4)])["type"] == "list"
    with pytest.raises(ValueError, match="at most 10"):
        interactive("?", [Payload(f"o{i}") for i in range(11)])
    with pytest.raises(ValueError, match="must differ"):
        interactive("?", [Payload("A"), Payload("A", title="again")])
    with pytest.raises(ValueError, match="at most 200"):
        interactive("?", [Payload("x" * 201, title="long id"), *(Payload(f"o{i}") for i in "abc")])


def test_template_parameters_hold_no_line_breaks_and_never_nothing() -> None:
    template = Template("order_update", "en_US", ("{name}", "{text}", "Order {text}"))
    body = render_template(template, "1", "Line one\n\n\tline   two", None)
    parameters = body["template"]["components"][0]["parameters"]
    assert [p["text"] for p in parameters] == [
        "there",
        "Line one line two",
        "Order Line one line two",
    ]
    bare = render_template(Template("hello_world", "en_US", ()), "1", "x", "Dana")
    assert "components" not in bare["template"]
    assert render_read("wamid.1", typing=True) == {
        "messaging_product": "whatsapp",
        "status": "read",
        "message_id": "wamid.1",
        "typing_indicator": {"type": "text"},
    }


@pytest.mark.parametrize(
    ("code", "slug", "retry"),
    [
        (131047, "outside_window", False),
        (131026, "undeliverable", False),
        (130429, "rate_limited", True),
        (131056, "rate_limited", True),
        (190, "token_expired", False),
        (131030, "recipient_not_allowed", False),
        (132001, "template_error", False),
        (131000, "upstream_error", True),
        (999999, "failed", False),
    ],
)
def test_error_codes(code: int, slug: str, retry: bool) -> None:
    assert classify(code) == (slug, retry)


def test_errors_without_a_body_and_statuses_without_errors() -> None:
    assert graph_failure(503, None).retry is True
    assert graph_failure(429, b"").reason == "rate_limited: HTTP 429"
    assert graph_failure(404, None).reason == "bad_request: HTTP 404"
    assert graph_failure(500, {"error": {"code": 42}}).retry is True
    assert status_reason([]) == "failed: WhatsApp gave no reason"


def test_every_signed_fixture_is_signed_with_the_app_secret_and_run_through_the_route() -> None:
    signed = sorted(p.name for p in PAYLOADS.glob("*.sig.txt"))
    for name in signed:
        body = name.replace(".sig.txt", ".json")
        note = sidecar(name)
        if "X-Hub-Signature-256" in note:
            assert note["X-Hub-Signature-256"] == signature(raw(body)), name
            assert body in INBOUND  # tests/test_channel_whatsapp.py posts each of these
        else:  # the tampered body presents another body's signature
            assert note["X-Hub-Signature-256 presented"] != signature(raw(body))
    assert len(signed) == len(INBOUND) + 1
