"""Surveys on WhatsApp and by e-mail, through each channel's own protocol: the customer
writes through Meta's signed webhook (or Postmark's inbound post), the survey goes out
through a local Graph API (or a real SMTP server, aiosmtpd) as that channel shows it, the
customer's answer comes back the same way and shows in the service report."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP
from redis.asyncio import Redis

from omni import keys
from tests.adapters.test_email import edited, payload
from tests.conftest import AGENT
from tests.test_channel_email import (
    DANA,
    FIRST,
    REPLY,
    Mailbox,
    context_of,
    postmark,
)
from tests.test_channel_email import delivering as mailing
from tests.test_channel_whatsapp import accepted
from tests.test_channel_whatsapp_send import delivering
from tests.test_surveys import answer_and_resolve, customer_id, report, survey_answers, timeline
from tests.test_worker import until
from tests.whatsapp_graph import WA_ID, Graph, message


@pytest.fixture
async def graph(aiohttp_server: Any) -> tuple[Graph, str]:
    """WhatsApp's Graph API as a local server."""
    stub = Graph()
    server = await aiohttp_server(stub.app())
    return stub, str(server.make_url("/v22.0"))


@pytest.fixture
async def mailbox() -> AsyncIterator[tuple[Mailbox, int]]:
    """A real SMTP server (aiosmtpd) in the test's loop, keeping every mail."""
    box = Mailbox()
    server = await asyncio.get_running_loop().create_server(
        lambda: SMTP(box, hostname="mx.test"), "127.0.0.1", 0
    )
    yield box, server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


def sent_to_whatsapp(stub: Graph) -> list[dict[str, Any]]:
    return [request["body"] for request in stub.requests]


async def test_a_conversation_resolved_on_whatsapp_gets_its_survey_as_a_list(
    aiohttp_client: Any, redis_url: str, redis: Redis, graph: tuple[Graph, str]
) -> None:
    stub, graph_url = graph
    client = await delivering(aiohttp_client, redis_url, graph_url)
    await accepted(client, message("text", {"body": "Where is my parcel?"}, "wamid.svy.1"))
    cid = await customer_id(client, "whatsapp", WA_ID)
    await answer_and_resolve(client, cid, "whatsapp")

    async def asked() -> bool:
        return any(body.get("type") == "interactive" for body in sent_to_whatsapp(stub))

    await until(asked)
    [question] = [b for b in sent_to_whatsapp(stub) if b.get("type") == "interactive"]
    assert question["to"] == WA_ID
    listed = question["interactive"]
    # Five choices do not fit WhatsApp's three reply buttons: a list, one row a score.
    assert listed["type"] == "list"
    assert listed["body"]["text"].startswith("How satisfied are you")
    survey = (await redis.hget(keys.survey(cid), "id")).decode()  # type: ignore[union-attr]
    rows = listed["action"]["sections"][0]["rows"]
    assert rows == [{"id": f"SURVEY:{survey}:{n}", "title": str(n)} for n in range(1, 6)]

    # The customer picks 4: WhatsApp sends the row's id back as a list_reply.
    tapped = {"type": "list_reply", "list_reply": {"id": rows[3]["id"], "title": "4"}}
    await accepted(client, message("interactive", tapped, "wamid.svy.2"))
    [recorded] = survey_answers(await timeline(client, cid))
    assert (recorded["survey_kind"], recorded["score"]) == ("csat", 4)
    assert recorded["channel"] == "whatsapp"
    assert recorded["resolved_by"] == "agent" and recorded["channels_crossed"] == 1
    assert await redis.exists(keys.survey(cid)) == 0  # answered: closed

    async def thanked() -> bool:
        texts = [b.get("text", {}).get("body") for b in sent_to_whatsapp(stub)]
        return "Thank you for your feedback!" in texts

    await until(thanked)
    figures = await report(client, group_by="channel")
    [whatsapp] = [g for g in figures["groups"] if g["key"] == "whatsapp"]
    csat = whatsapp["csat"]
    assert (csat["sent"], csat["answered"], csat["average"], csat["response_rate"]) == (1, 1, 4, 1)
    assert whatsapp["resolved"] == 1

    # NPS has eleven choices, more than a list's ten rows: a numbered question, answered
    # by typing the number.
    nps = await client.post(f"/v1/customers/{cid}/surveys", json={"kind": "nps"}, headers=AGENT)
    assert nps.status == 201, await nps.text()
    assert (await nps.json())["style"] == "numbered"

    async def numbered() -> bool:
        texts = [b.get("text", {}).get("body") or "" for b in sent_to_whatsapp(stub)]
        return any("Reply with a number from 0 to 10." in t for t in texts)

    await until(numbered)
    await accepted(client, message("text", {"body": "9"}, "wamid.svy.3"))
    answers = survey_answers(await timeline(client, cid))
    assert [(a["survey_kind"], a["score"]) for a in answers] == [("nps", 9), ("csat", 4)]
    promoters = (await report(client, channel="whatsapp"))["totals"]["nps"]["promoters"]
    assert promoters == 1


async def test_a_conversation_resolved_by_email_gets_a_numbered_survey_in_the_thread(
    aiohttp_client: Any, redis_url: str, redis: Redis, mailbox: tuple[Mailbox, int]
) -> None:
    box, port = mailbox
    client = await mailing(aiohttp_client, redis_url, port)
    assert (await postmark(client, payload(FIRST))).status == 200
    cid = (await context_of(client, DANA))["customer"]["id"]
    await answer_and_resolve(client, cid, "email")

    async def mailed(n: int) -> bool:
        return len(box.mails) >= n

    await until(lambda: mailed(2))  # the agent's answer, then the survey
    survey_mail = next(m for m in box.mails if "How satisfied" in m.get_content())
    text = survey_mail.get_content()
    assert "Reply with a number from 1 to 5." in text
    assert survey_mail["Subject"] == "Re: Order A-1042 not arrived"  # in the customer's thread
    assert survey_mail["In-Reply-To"] == "<CAF3x9Yq1-synthetic-0001@mail.example.net>"
    sent_id = survey_mail["Message-ID"].strip("<>")

    # Dana answers from her mail program: "4" above the quoted question.
    headers = [
        {"Name": "Message-ID", "Value": "<survey-answer-1@mail.example.net>"},
        {"Name": "In-Reply-To", "Value": f"<{sent_id}>"},
        {"Name": "References", "Value": f"<{sent_id}>"},
    ]
    quoted = "\n".join("> " + line for line in text.strip().splitlines())
    answer = edited(REPLY, Headers=headers, MessageID="9b1c2d3e-0000-4000-8000-0000000000a1",
                    Subject="Re: Order A-1042 not arrived",
                    TextBody=f"4\n\nOn Thu, 1 Jan 2026, Omni Support wrote:\n{quoted}",
                    StrippedTextReply="4")  # fmt: skip
    assert (await postmark(client, answer)).status == 200
    [recorded] = survey_answers(await timeline(client, cid))
    assert (recorded["survey_kind"], recorded["score"]) == ("csat", 4)
    assert recorded["channel"] == "email"
    assert recorded["agent"] == "test agent"
    # The answer is the survey's event: the conversation stays resolved, thanks are mailed.
    context = await context_of(client, DANA)
    assert context["conversation"]["status"] == "resolved"
    await until(lambda: mailed(3))
    assert box.mails[2].get_content().strip() == "Thank you for your feedback!"

    figures = await report(client, group_by="channel")
    [email] = [g for g in figures["groups"] if g["key"] == "email"]
    csat = email["csat"]
    assert (csat["sent"], csat["answered"], csat["average"], csat["response_rate"]) == (1, 1, 4, 1)
    # A later "5" is no answer: the survey is closed, so it is a plain message.
    again = edited(REPLY, Headers=[{"Name": "Message-ID", "Value": "<late-5@mail.example.net>"}],
                   MessageID="9b1c2d3e-0000-4000-8000-0000000000a2", TextBody="5",
                   StrippedTextReply="5")  # fmt: skip
    assert (await postmark(client, again)).status == 200
    assert len(survey_answers(await timeline(client, cid))) == 1
    assert any(
        m.get("text") == "5" and m["channel"] == "email" for m in await timeline(client, cid)
    )
