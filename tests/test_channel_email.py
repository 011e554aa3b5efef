"""The e-mail channel through the real app: every fixture through the inbound route into
the history, both providers' authentication (nothing stored without it), redelivery,
who a mail is from, auto-replies and bounces, the bot, and replies out over SMTP to a
real SMTP server (aiosmtpd) running in the test's own event loop."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import secrets
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from omni.app import create_app
from omni.settings import Settings
from tests.adapters.test_email import BASIC, SIGNING_KEY, edited, payload
from tests.conftest import ADMIN, AGENT, make_settings, snapshot
from tests.smtp_server import Mailbox, has_mails
from tests.test_bots import BotReceiver, ServerFactory, serve
from tests.test_worker import until

INBOUND = "/channels/email/inbound"
DANA = "dana@example.net"
EMAIL = {
    "mailgun_signing_key": SIGNING_KEY,
    "postmark_user": "postmark",
    "postmark_password": "pm-password-0001",
    "from_address": "support@omni.example.com",
    "from_name": "Omni Support",
    "smtp_url": "smtp://127.0.0.1:9",  # nothing listens: inbound tests send nothing
}
FAST = {"in_process_worker": True, "block_ms": 50, "base_delay_ms": 5, "max_delay_ms": 20}
BOT_SECRET = "email-bot-secret-00001"
FIRST = "email_postmark_inbound.json"
REPLY = "email_postmark_reply_inbound.json"
AUTO = "email_autoreply_inbound.json"


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return make_settings(redis_url, email=EMAIL)


async def postmark(client: TestClient, body: bytes, auth: str = BASIC) -> ClientResponse:
    headers = {"Content-Type": "application/json", "Authorization": auth}
    # A stream, as a client sends a large body (raw bytes over 1 MiB warn in aiohttp).
    return await client.post(INBOUND, data=io.BytesIO(body), headers=headers)


def signed(fields: dict[str, str], *, at: int | None = None, key: str = SIGNING_KEY) -> bytes:
    """A Mailgun form with a fresh timestamp and token, signed with `key`."""
    timestamp = str(int(time.time()) if at is None else at)
    token = secrets.token_hex(25)
    signature = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    return urlencode({**fields, "timestamp": timestamp, "token": token, "signature": signature})\
        .encode()  # fmt: skip


def mailgun_fields() -> dict[str, str]:
    return dict(parse_qsl(payload("email_mailgun_inbound.form").decode(), keep_blank_values=True))


async def mailgun(client: TestClient, body: bytes) -> ClientResponse:
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    return await client.post(INBOUND, data=body, headers=headers)


async def context_of(client: TestClient, address: str) -> dict[str, Any]:
    response = await client.get(
        "/v1/context", params={"channel": "email", "external_id": address}, headers=AGENT
    )
    assert response.status == 200, await response.text()
    data: dict[str, Any] = await response.json()
    return data


async def history(client: TestClient, cid: str) -> list[dict[str, Any]]:
    response = await client.get(f"/v1/customers/{cid}/history", headers=AGENT)
    assert response.status == 200
    messages: list[dict[str, Any]] = (await response.json())["messages"]
    return messages


async def test_every_postmark_fixture_through_the_route(client: TestClient) -> None:
    first = await postmark(client, payload(FIRST))
    assert first.status == 200, await first.text()
    assert (await first.json())["messages"] == 1
    reply = await postmark(client, payload(REPLY))
    assert reply.status == 200
    context = await context_of(client, DANA)
    texts = [m["text"] for m in context["recent_messages"]]
    assert "Hi, my order A-1042 has not arrived yet. Can you check?\n\nThanks,\nDana" in texts
    assert "Any update on this?" in texts  # the quoted history is not for bots
    newest = next(m for m in context["recent_messages"] if m["text"] == "Any update on this?")
    assert "> Hi, my order A-1042" in newest["metadata"]["body"]  # but kept for agents
    assert newest["metadata"]["subject"] == "Re: Order A-1042 not arrived"
    assert newest["reply_to"] == "CAF3x9Yq1-synthetic-0001@mail.example.net"
    assert newest["conversation_id"] == context["recent_messages"][-1]["conversation_id"]
    oldest = next(m for m in context["recent_messages"] if m["attachments"])
    assert oldest["attachments"] == [
        {"type": "file", "mime": "application/pdf", "size": 21, "name": "receipt.pdf"}
    ]
    assert context["customer"]["profile"]["name"] == "Dana Example"
    auto = await postmark(client, payload(AUTO))
    assert auto.status == 200
    assert (await auto.json()) == {"messages": 0, "automatic": "auto_reply"}
    after = await context_of(client, DANA)
    assert after["customer"]["last_channel"] == "email"
    events = await history(client, context["customer"]["id"])
    event = next(m for m in events if m["channel"] == "system")
    assert event["metadata"]["kind"] == "email_auto_reply"
    assert event["text"].startswith("Auto-reply from dana@example.net")
    assert event["metadata"]["body"].startswith("I am out of the office")


async def test_the_mailgun_fixture_through_the_route(aiohttp_client: Any, redis_url: str,
                                                     redis: Redis) -> None:  # fmt: skip
    # The recorded post is from 1 January 2026: a window this wide accepts it.
    wide = make_settings(redis_url, email={**EMAIL, "signature_max_age_s": 10 * 365 * 86_400})
    client = await aiohttp_client(create_app(wide))
    response = await mailgun(client, payload("email_mailgun_inbound.form"))
    assert response.status == 200, await response.text()
    context = await context_of(client, DANA)
    [message] = context["recent_messages"]
    assert message["text"] == "Any update on this?"
    assert message["metadata"]["provider"] == "mailgun"
    assert "We are checking with the carrier." in message["metadata"]["body"]
    # Mailgun's retry of the same post (its 200 lost on the way): 200, stored once.
    before = await snapshot(redis)
    again = await mailgun(client, payload("email_mailgun_inbound.form"))
    assert again.status == 200, await again.text()
    assert (await again.json())["messages"] == 0
    assert await snapshot(redis) == before
    # The same token and signature over another mail: a replay, refused.
    fields = mailgun_fields()
    fields["Message-Id"] = "<forged-1@example.net>"
    fields["stripped-text"] = "Send the refund to this other account."
    forged = await mailgun(client, urlencode(fields).encode())
    assert forged.status == 401
    assert await snapshot(redis) == before


async def test_mailgun_fresh_signature_is_accepted_and_forged_ones_store_nothing(
    client: TestClient, redis: Redis
) -> None:
    fields = mailgun_fields()
    before = await snapshot(redis)
    for body in (
        signed(fields, key="key-not-ours"),
        signed(fields, at=int(time.time()) - 3600),  # an old post
        signed(fields, at=int(time.time()) + 3600),
        urlencode({**fields, "signature": "0" * 64}).encode(),
        urlencode({k: v for k, v in fields.items() if k != "signature"}).encode(),
    ):
        response = await mailgun(client, body)
        assert response.status == 401
        assert response.content_type == "application/problem+json"
    assert await snapshot(redis) == before
    good = signed(fields)
    assert (await mailgun(client, good)).status == 200
    stored = await snapshot(redis)
    retry = await mailgun(client, good)  # the same post again: a retry, stored once
    assert retry.status == 200
    other = dict(parse_qsl(good.decode()), **{"Message-Id": "<other-2@example.net>"})
    replay = await mailgun(client, urlencode(other).encode())  # its token on another mail
    assert replay.status == 401
    assert "used before" in (await replay.json())["detail"]
    assert await snapshot(redis) == stored


async def test_postmark_without_the_right_basic_auth_stores_nothing(
    client: TestClient, redis: Redis
) -> None:
    before = await snapshot(redis)
    wrong = "Basic " + base64.b64encode(b"postmark:guess").decode()
    for auth in ("", wrong, "Basic " + base64.b64encode(b"other:pm-password-0001").decode()):
        response = await postmark(client, payload(FIRST), auth)
        assert response.status == 401
    assert await snapshot(redis) == before


async def test_malformed_posts_are_400_and_write_nothing(client: TestClient, redis: Redis) -> None:
    before = await snapshot(redis)
    for body in (b"{", b"[1]", edited(FIRST, From="nobody", FromFull={"Email": "x"}),
                 edited(FIRST, Attachments=[{"Name": 3}])):  # fmt: skip
        response = await postmark(client, body)
        assert response.status == 400, await response.text()
    bad_headers = signed({**mailgun_fields(), "message-headers": "[[1"})
    assert (await mailgun(client, bad_headers)).status == 400
    plain = await client.post(INBOUND, data=b"hello", headers={"Content-Type": "text/plain"})
    assert plain.status == 415
    assert await snapshot(redis) == before


async def test_a_redelivered_mail_is_stored_once(client: TestClient) -> None:
    for _ in range(3):
        assert (await postmark(client, payload(FIRST))).status == 200
    context = await context_of(client, DANA)
    assert len(context["recent_messages"]) == 1


async def test_html_mail_reaches_bots_as_text(client: TestClient) -> None:
    html = (
        "<div>Where is <b>A-1042</b>?</div><script>steal()</script>"
        '<div class="gmail_quote">On Thu wrote:<blockquote>old</blockquote></div>'
    )
    body = edited(FIRST, TextBody="", HtmlBody=html)
    assert (await postmark(client, body)).status == 200
    [message] = (await context_of(client, DANA))["recent_messages"]
    assert message["text"] == "Where is A-1042?"
    assert "steal" not in json.dumps(message)
    assert message["metadata"]["html"] is True


async def test_limits_truncate_a_huge_mail_and_refuse_a_larger_one(
    aiohttp_client: Any, redis_url: str, redis: Redis
) -> None:
    client = await aiohttp_client(create_app(make_settings(redis_url, email=EMAIL)))
    many = [{"Name": f"f{i}.png", "ContentType": "image/png", "ContentLength": 10,
             "Content": "AAAA"} for i in range(100)]  # fmt: skip
    huge_text = "x" * (25 * 1024 * 1024)  # 25 MiB of text in one mail
    body = edited(FIRST, Attachments=many, TextBody=huge_text, StrippedTextReply="")
    response = await postmark(client, body)
    assert response.status == 200, await response.text()
    [message] = (await context_of(client, DANA))["recent_messages"]
    assert len(message["text"]) == 4096 and message["metadata"]["text_truncated"] is True
    assert len(message["attachments"]) == 10
    assert message["metadata"]["attachments_total"] == 100
    small = make_settings(redis_url, email={**EMAIL, "body_max": 1024 * 1024})
    limited = await aiohttp_client(create_app(small))
    before = await snapshot(redis)
    refused = await postmark(limited, edited(REPLY, TextBody="y" * (2 * 1024 * 1024)))
    assert refused.status == 413
    assert refused.content_type == "application/problem+json"
    assert await snapshot(redis) == before


def authentication(result: str) -> bytes:
    headers = json.loads(payload(FIRST))["Headers"]
    for header in headers:
        if header["Name"] == "Authentication-Results":
            header["Value"] = f"inbound.postmarkapp.com; {result}"
    return edited(FIRST, Headers=headers)


async def verified_customer(client: TestClient) -> str:
    """A web-chat customer whose e-mail address an agent marked verified."""
    response = await client.post(
        "/v1/messages",
        json={"channel": "web", "external_id": "visitor-7", "channel_message_id": "w-1",
              "text": "hello from the site"},
        headers=AGENT,
    )  # fmt: skip
    assert response.status == 201, await response.text()
    cid: str = (await response.json())["customer_id"]
    patched = await client.patch(
        f"/v1/customers/{cid}/profile",
        json={"email": DANA, "email_verified": True},
        headers=AGENT,
    )
    assert patched.status == 200, await patched.text()
    return cid


@pytest.mark.parametrize(
    ("result", "joins"),
    [
        ("spf=pass smtp.mailfrom=example.net; dkim=none; dmarc=none", True),
        ("spf=none; dkim=pass header.d=example.net; dmarc=none", True),
        ("spf=fail smtp.mailfrom=example.net; dkim=fail header.d=example.net; dmarc=fail", False),
        ("spf=none; dkim=none; dmarc=none", False),
        ("spf=pass smtp.mailfrom=bulk.example.org; dkim=pass header.d=bulk.example.org", False),
    ],
)
async def test_an_authenticated_address_joins_the_customer_who_verified_it(
    client: TestClient, result: str, joins: bool
) -> None:
    cid = await verified_customer(client)
    assert (await postmark(client, authentication(result))).status == 200
    context = await context_of(client, DANA)
    assert (context["customer"]["id"] == cid) is joins
    if joins:
        texts = [m["text"] for m in context["recent_messages"]]
        assert "hello from the site" in texts  # the e-mail bot reads what was said on web


async def test_a_bot_reads_each_mail_with_context_and_no_auto_reply_wakes_it(
    aiohttp_client: Any, aiohttp_server: ServerFactory, redis_url: str, redis: Redis
) -> None:
    bot = BotReceiver(secret=BOT_SECRET)
    settings = make_settings(
        redis_url,
        email=EMAIL,
        outbox=FAST,
        bots={"email": {"url": await serve(aiohttp_server, bot), "secret": BOT_SECRET}},
    )
    client = await aiohttp_client(create_app(settings))
    assert (await postmark(client, payload(FIRST))).status == 200
    await until(lambda: _count(bot, 1))
    [delivered] = bot.delivered.values()
    assert delivered["message"]["metadata"]["subject"] == "Order A-1042 not arrived"
    assert delivered["context"]["customer"]["identities"][0]["external_id"] == DANA
    assert (await postmark(client, payload(AUTO))).status == 200
    bounce = edited(REPLY, From="MAILER-DAEMON@mx.example.net", FromFull=None,
                    Subject="Undelivered Mail Returned to Sender")  # fmt: skip
    assert (await postmark(client, bounce)).status == 200
    assert (await postmark(client, payload(REPLY))).status == 200
    await until(lambda: _count(bot, 2))
    texts = [d["message"]["text"] for d in bot.delivered.values()]
    assert texts[1] == "Any update on this?"  # the auto-reply and the bounce woke nothing


async def _count(bot: BotReceiver, n: int) -> bool:
    return len(bot.delivered) >= n


async def delivering(aiohttp_client: Any, redis_url: str, port: int) -> TestClient:
    email = {**EMAIL, "smtp_url": f"smtp://127.0.0.1:{port}"}
    return await aiohttp_client(create_app(make_settings(redis_url, email=email, outbox=FAST)))


async def reply_by_mail(client: TestClient, cid: str, text: str) -> dict[str, Any]:
    response = await client.post(
        f"/v1/customers/{cid}/messages", json={"text": text, "channel": "email"}, headers=AGENT
    )
    assert response.status == 202, await response.text()
    sent: dict[str, Any] = await response.json()
    return sent


async def test_a_reply_goes_out_over_smtp_threaded_under_the_customers_mail(
    aiohttp_client: Any, redis_url: str, redis: Redis, mailbox: tuple[Mailbox, int]
) -> None:
    box, port = mailbox
    client = await delivering(aiohttp_client, redis_url, port)
    assert (await postmark(client, payload(FIRST))).status == 200
    assert (await postmark(client, payload(REPLY))).status == 200
    cid = (await context_of(client, DANA))["customer"]["id"]
    await reply_by_mail(client, cid, "It ships today.")
    await until(lambda: has_mails(box, 1))
    [mail] = box.mails
    assert box.envelopes[0] == ("support@omni.example.com", [DANA])
    assert mail["Subject"] == "Re: Order A-1042 not arrived"
    assert mail["In-Reply-To"] == "<CAF3x9Yq1-synthetic-0002@mail.example.net>"
    assert mail["References"] == (
        "<CAF3x9Yq1-synthetic-0001@mail.example.net> <CAF3x9Yq1-synthetic-0002@mail.example.net>"
    )
    assert mail["Message-ID"].startswith("<omni.cnv_")
    assert mail["Auto-Submitted"] is None  # an agent wrote it
    assert mail.get_content().strip() == "It ships today."
    sent_id = mail["Message-ID"].strip("<>")

    async def sent() -> bool:
        messages = await history(client, cid)
        mine = [m for m in messages if m["direction"] == "outbound" and m["channel"] == "email"]
        return bool(mine) and mine[0]["status"]["state"] == "sent"

    await until(sent)
    outbound = next(m for m in await history(client, cid) if m["direction"] == "outbound")
    assert outbound["status"]["channel_message_id"] == sent_id


async def test_a_reply_to_omnis_mail_joins_its_conversation_by_in_reply_to(
    aiohttp_client: Any, redis_url: str, redis: Redis, mailbox: tuple[Mailbox, int]
) -> None:
    box, port = mailbox
    client = await delivering(aiohttp_client, redis_url, port)
    # A web customer, never mailed from: omni sends a receipt to their verified address.
    cid = await verified_customer(client)
    await reply_by_mail(client, cid, "Your receipt for A-1042.")
    await until(lambda: has_mails(box, 1))
    receipt = box.mails[0]
    assert receipt["Subject"] == "Your conversation with us"
    sent_id = receipt["Message-ID"].strip("<>")
    # Their reply, from that address, unauthenticated (a forwarder broke SPF and DKIM):
    # In-Reply-To names omni's receipt, so it joins the conversation it answers.
    headers = [
        {"Name": "Message-ID", "Value": "<answer-1@mail.example.net>"},
        {"Name": "In-Reply-To", "Value": f"<{sent_id}>"},
        {"Name": "References", "Value": f"<{sent_id}>"},
    ]
    answer = edited(REPLY, Headers=headers, Subject="Re: Your conversation with us",
                    TextBody="Thanks, got it.", StrippedTextReply="")  # fmt: skip
    assert (await postmark(client, answer)).status == 200
    context = await context_of(client, DANA)
    assert context["customer"]["id"] == cid
    latest = context["recent_messages"][-1]
    assert latest["text"] == "Thanks, got it."
    assert latest["reply_to"] == sent_id
    web = next(m for m in context["recent_messages"] if m["channel"] == "web")
    assert latest["conversation_id"] == web["conversation_id"]
    # The same reply from an address omni did not mail joins nothing.
    other = edited(REPLY, Headers=[*headers[1:], {"Name": "Message-ID", "Value": "<o@x.org>"}],
                   From="mallory@example.org", FromFull=None)  # fmt: skip
    assert (await postmark(client, other)).status == 200
    assert (await context_of(client, "mallory@example.org"))["customer"]["id"] != cid
    # A bounce of omni's next mail marks it failed.
    await reply_by_mail(client, cid, "One more thing.")
    await until(lambda: has_mails(box, 2))
    bounced_id = box.mails[1]["Message-ID"]
    await until(lambda: _state(client, cid, "One more thing.", "sent"))
    report = edited(REPLY, From="MAILER-DAEMON@mx.example.net", FromFull=None,
                    Headers=[{"Name": "Message-ID", "Value": "<dsn-1@mx.example.net>"}],
                    TextBody=f"Delivery failed.\nDiagnostic-Code: smtp; 550 5.1.1 mailbox "
                             f"unavailable\n\nMessage-ID: {bounced_id}",
                    StrippedTextReply="")  # fmt: skip
    assert (await postmark(client, report)).status == 200

    await until(lambda: _state(client, cid, "One more thing.", "failed"))
    [bounced] = [m for m in await history(client, cid) if m.get("text") == "One more thing."]
    assert bounced["status"]["reason"].startswith("bounced: 550 5.1.1 mailbox unavailable")


async def _state(client: TestClient, cid: str, text: str, state: str) -> bool:
    mine = [m for m in await history(client, cid) if m.get("text") == text]
    return bool(mine) and (mine[0].get("status") or {}).get("state") == state


def multipart(fields: dict[str, str], files: list[tuple[str, str, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body as Mailgun posts a mail with attachments."""
    boundary = secrets.token_hex(12)
    body = b""
    for name, value in fields.items():
        body += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        body += value.encode() + b"\r\n"
    for index, (filename, kind, data) in enumerate(files, 1):
        body += (
            (
                f"--{boundary}\r\nContent-Disposition: form-data; "
                f'name="attachment-{index}"; filename="{filename}"\r\nContent-Type: {kind}\r\n\r\n'
            ).encode()
            + data
            + b"\r\n"
        )
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


async def test_mailgun_multipart_with_attachments_through_the_route(client: TestClient) -> None:
    fields = dict(parse_qsl(signed(mailgun_fields()).decode(), keep_blank_values=True))
    fields["attachment-count"] = "2"
    photo = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 40
    body, kind = multipart(fields, [("box.jpg", "image/jpeg", photo),
                                    ("label.pdf", "application/pdf", b"%PDF-1.4 x")])  # fmt: skip
    response = await client.post(INBOUND, data=body, headers={"Content-Type": kind})
    assert response.status == 200, await response.text()
    [message] = (await context_of(client, DANA))["recent_messages"]
    assert message["attachments"] == [
        {"type": "image", "mime": "image/jpeg", "size": len(photo), "name": "box.jpg"},
        {"type": "file", "mime": "application/pdf", "size": 10, "name": "label.pdf"},
    ]


async def test_erasure_removes_the_mail_index(
    aiohttp_client: Any, redis_url: str, redis: Redis, mailbox: tuple[Mailbox, int]
) -> None:
    box, port = mailbox
    client = await delivering(aiohttp_client, redis_url, port)
    assert (await postmark(client, payload(FIRST))).status == 200
    cid = (await context_of(client, DANA))["customer"]["id"]
    await reply_by_mail(client, cid, "Noted.")
    await until(lambda: has_mails(box, 1))
    await until(lambda: _state(client, cid, "Noted.", "sent"))
    assert [k async for k in redis.scan_iter(match="omni:msgid:*")]
    erased = await client.delete(f"/v1/customers/{cid}", headers=ADMIN)
    assert erased.status in (200, 202, 204), await erased.text()
    assert [k async for k in redis.scan_iter(match="omni:msgid:*")] == []
    assert [k async for k in redis.scan_iter(match=f"omni:{{{cid}}}:*")] == []


async def test_a_bots_reply_is_mailed_as_an_automatic_answer_in_the_thread(
    aiohttp_client: Any, aiohttp_server: ServerFactory, redis_url: str, redis: Redis,
    mailbox: tuple[Mailbox, int],
) -> None:  # fmt: skip
    box, port = mailbox
    bot = BotReceiver(secret=BOT_SECRET)
    bot.default = (200, {"replies": [{"text": "We are on it."}]})
    settings = make_settings(
        redis_url,
        email={**EMAIL, "smtp_url": f"smtp://127.0.0.1:{port}"},
        outbox=FAST,
        bots={"email": {"url": await serve(aiohttp_server, bot), "secret": BOT_SECRET}},
    )
    client = await aiohttp_client(create_app(settings))
    assert (await postmark(client, payload(FIRST))).status == 200
    await until(lambda: has_mails(box, 1))
    [mail] = box.mails
    assert mail["Auto-Submitted"] == "auto-replied"
    assert mail["In-Reply-To"] == "<CAF3x9Yq1-synthetic-0001@mail.example.net>"
    assert mail["Subject"] == "Re: Order A-1042 not arrived"
    assert mail.get_content().strip() == "We are on it."


async def test_journey_web_chat_then_an_email_receipt_then_a_reply_the_bot_understands(
    aiohttp_client: Any, aiohttp_server: ServerFactory, redis_url: str, redis: Redis,
    mailbox: tuple[Mailbox, int],
) -> None:  # fmt: skip
    box, port = mailbox
    bot = BotReceiver(secret=BOT_SECRET)
    settings = make_settings(
        redis_url,
        email={**EMAIL, "smtp_url": f"smtp://127.0.0.1:{port}"},
        outbox=FAST,
        bots={"email": {"url": await serve(aiohttp_server, bot), "secret": BOT_SECRET}},
    )
    client = await aiohttp_client(create_app(settings))
    cid = await verified_customer(client)  # said "hello from the site" on the web chat
    await reply_by_mail(client, cid, "Receipt: order A-1042, 2 items, 59.00 EUR.")
    await until(lambda: has_mails(box, 1))
    receipt = box.mails[0]
    answer = edited(
        REPLY,
        Headers=[{"Name": "Message-ID", "Value": "<answer-9@mail.example.net>"},
                 {"Name": "In-Reply-To", "Value": receipt["Message-ID"]}],
        Subject=f"Re: {receipt['Subject']}",
        TextBody="Can I change the address?\n\nOn Mon, Omni Support wrote:\n> Receipt: …",
        StrippedTextReply="",
    )  # fmt: skip
    assert (await postmark(client, answer)).status == 200
    await until(lambda: _count(bot, 1))
    [delivered] = bot.delivered.values()
    assert delivered["message"]["text"] == "Can I change the address?"
    assert delivered["context"]["customer"]["id"] == cid
    said = [m.get("text") for m in delivered["context"]["recent_messages"]]
    assert "hello from the site" in said  # what the customer said on the web chat
    assert "Receipt: order A-1042, 2 items, 59.00 EUR." in said  # and what they were sent
    continuity = delivered["context"]["continuity"]
    assert (continuity["came_from"], continuity["current_channel"]) == ("web", "email")


async def test_our_own_mail_coming_back_is_not_stored(client: TestClient, redis: Redis) -> None:
    before = await snapshot(redis)
    own = edited(FIRST, From="Support@Omni.Example.com", FromFull=None)
    response = await postmark(client, own)
    assert (response.status, (await response.json())["messages"]) == (200, 0)
    assert await snapshot(redis) == before


async def test_a_linked_address_that_is_no_address_fails_without_a_send(
    aiohttp_client: Any, redis_url: str, redis: Redis, mailbox: tuple[Mailbox, int]
) -> None:
    box, port = mailbox
    client = await delivering(aiohttp_client, redis_url, port)
    cid = await verified_customer(client)
    linked = await client.post(
        f"/v1/customers/{cid}/identities",
        json={"channel": "email", "external_id": "x@example.net\r\nBcc: all@example.org"},
        headers=AGENT,
    )
    assert linked.status == 201, await linked.text()
    await reply_by_mail(client, cid, "Hello?")
    await until(lambda: _state(client, cid, "Hello?", "failed"))
    [message] = [m for m in await history(client, cid) if m.get("text") == "Hello?"]
    assert message["status"]["reason"].startswith("not an e-mail address")
    assert box.mails == []
