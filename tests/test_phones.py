"""Phone numbers, right: however a number is written, omni stores it once, in E.164, and
it matches the same number from a caller or a text (omni.phones, omni.migrations)."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from omni import codec, keys
from omni.app import create_app
from omni.errors import ConfigError
from omni.migrations import migrate_phones
from omni.model import Identity, Profile
from omni.phones import canonical_external_id, normalize_phone, region_of_locale
from omni.settings import Settings
from omni.store import Store
from tests.conftest import AGENT, BOT, CLUSTER, ingest, make_settings, snapshot

LONDON = "+442079460958"


async def _app(aiohttp_client: Any, redis_url: str, region: str = "") -> TestClient:
    settings = make_settings(redis_url, identity={"default_region": region})
    client: TestClient = await aiohttp_client(create_app(settings))
    return client


async def _profile(client: TestClient, cid: str, body: dict[str, Any]) -> Any:
    return await client.patch(f"/v1/customers/{cid}/profile", json=body, headers=AGENT)


async def _find(client: TestClient, q: str) -> list[str]:
    response = await client.get("/v1/customers", params={"q": q}, headers=AGENT)
    assert response.status == 200, await response.text()
    return [c["id"] for c in (await response.json())["customers"]]


# -- the normaliser ---------------------------------------------------------------------


def test_the_cases_of_the_issue() -> None:
    assert normalize_phone("+44 (0)20 7946 0958") == LONDON
    assert normalize_phone("(415) 555-0100", "US") == "+14155550100"
    assert normalize_phone("06 12 34 56 78", "FR") == "+33612345678"
    assert normalize_phone("06 12 34 56 78", locale="fr-FR") == "+33612345678"
    assert normalize_phone("+1234567") is None  # not a number any country has


def test_a_national_number_needs_a_region() -> None:
    assert normalize_phone("(415) 555-0100") is None
    assert normalize_phone("06 12 34 56 78") is None
    assert normalize_phone("06 12 34 56 78", locale="fr") is None  # a language, no country
    # The customer's locale wins over the configured region: they wrote it at home.
    assert normalize_phone("06 12 34 56 78", "US", locale="fr-FR") == "+33612345678"
    # The region's own international prefix: 00 in France, 011 in the US.
    assert normalize_phone("0044 20 7946 0958", "FR") == LONDON
    assert normalize_phone("011 44 20 7946 0958", "US") == LONDON


def test_what_is_not_a_number() -> None:
    for raw in ("", "call me", "12345", "+0612345678", "+33 6 12 34 56 78 90 12 34", "+" * 80):
        assert normalize_phone(raw, "US") is None, raw


def test_locales_and_channel_ids() -> None:
    assert region_of_locale("pt_BR") == "BR"
    assert region_of_locale("en") is None
    assert region_of_locale(None) is None
    assert canonical_external_id("sms", "+1 (415) 555-0123") == "+14155550123"
    assert canonical_external_id("voice", "client:alice") == "client:alice"
    # libphonenumber would read the number out of these; they are other kinds of address.
    assert canonical_external_id("sms", "whatsapp:+14155550123") == "whatsapp:+14155550123"
    assert canonical_external_id("voice", "sip:+14155550123@pbx.example.com") == (
        "sip:+14155550123@pbx.example.com"
    )
    assert canonical_external_id("whatsapp", "+1 415 555 0123") == "14155550123"
    assert canonical_external_id("whatsapp", "14155550123") == "14155550123"
    assert canonical_external_id("web", "+1 415 555 0123") == "+1 415 555 0123"
    # "?external_id=+1…" unescaped: the query string made the "+" a space.
    assert canonical_external_id("sms", " 14155550123") == "+14155550123"


def test_default_region_is_checked() -> None:
    assert Settings.from_mapping(
        {"identity": {"default_region": "gb"}}
    ).identity.default_region == ("GB")
    assert Settings.from_mapping({}).identity.default_region == ""
    with pytest.raises(ConfigError, match=r"identity\.default_region"):
        Settings.from_mapping({"identity": {"default_region": "XX"}})


# -- through the API ------------------------------------------------------------------------


async def test_a_number_written_with_0_matches_the_caller(
    aiohttp_client: Any, redis_url: str, redis: Redis
) -> None:
    client = await _app(aiohttp_client, redis_url)
    cid = (await ingest(client))["customer_id"]
    body = {"phone": "+44 (0)20 7946 0958", "phone_verified": True}
    response = await _profile(client, cid, body)
    assert response.status == 200, await response.text()
    assert (await response.json())["customer"]["profile"]["phone"] == LONDON
    assert await _find(client, LONDON) == [cid]
    # Unescaped in a URL, the "+" arrives as a space: still the number.
    response = await client.get(f"/v1/customers?q={LONDON}", headers=AGENT)
    assert [c["id"] for c in (await response.json())["customers"]] == [cid]
    # The caller's number, as Twilio sends it, joins the customer who verified it.
    text = await ingest(
        client, channel="sms", external_id=LONDON, channel_message_id="SM1", text="hello"
    )
    assert text["customer_id"] == cid


async def test_national_numbers_in_the_default_region(
    aiohttp_client: Any, redis_url: str, redis: Redis
) -> None:
    client = await _app(aiohttp_client, redis_url, region="US")
    cid = (await ingest(client))["customer_id"]
    response = await _profile(client, cid, {"phone": "(415) 555-0100"})
    assert (await response.json())["customer"]["profile"]["phone"] == "+14155550100"
    assert await _find(client, "415-555-0100") == [cid]
    # A French customer's number is read in France, from their locale.
    other = (await ingest(client, external_id="visitor-2"))["customer_id"]
    response = await _profile(client, other, {"locale": "fr-FR", "phone": "06 12 34 56 78"})
    assert (await response.json())["customer"]["profile"]["phone"] == "+33612345678"
    # An identity given in a national format is stored canonical, and found by any form.
    linked = await client.post(
        f"/v1/customers/{cid}/identities",
        json={"channel": "sms", "external_id": "(415) 555-0123"},
        headers=AGENT,
    )
    assert (await linked.json())["external_id"] == "+14155550123"
    found = await client.get(
        "/v1/context", params={"channel": "sms", "external_id": "415 555 0123"}, headers=BOT
    )
    assert (await found.json())["customer"]["id"] == cid


async def test_refused_numbers_change_nothing(
    aiohttp_client: Any, redis_url: str, redis: Redis
) -> None:
    client = await _app(aiohttp_client, redis_url)  # no region: national numbers refused
    cid = (await ingest(client))["customer_id"]
    before = await snapshot(redis)
    for typed in ("+1234567", "(415) 555-0100", "06 12 34 56 78"):
        response = await _profile(client, cid, {"phone": typed})
        assert response.status == 422, typed
        assert (await response.json())["field"] == "phone"
    assert await snapshot(redis) == before


# -- the migration ----------------------------------------------------------------------


async def test_old_numbers_are_migrated_once_and_then_match(
    aiohttp_client: Any, redis_url: str, redis: Redis
) -> None:
    client = await _app(aiohttp_client, redis_url)
    store = Store(redis)
    cid = (await ingest(client))["customer_id"]
    # As the version before libphonenumber stored them: the (0) kept after +44.
    old = Profile(name="Ana", phone="+4402079460958", phone_verified=True)
    await store.customers.put_profile(cid, old, None)
    await store.search.index_profile(cid, None, old)
    caller = (await ingest(client, external_id="visitor-2"))["customer_id"]
    await redis.set(keys.identity("voice", "+4402079460958"), caller)
    identity = Identity(channel="voice", external_id="+4402079460958")
    await redis.hset(keys.customer(caller), "i:voice:+4402079460958", codec.encode(identity))
    assert await _find(client, LONDON) == []  # the bug: the caller's form never matches

    report = await migrate_phones(store)
    assert (report.profiles, report.identities, report.conflicts) == (1, 1, 0)
    profile, _ = await store.customers.profile(cid)
    assert (profile.phone, profile.phone_verified) == (LONDON, True)
    assert await _find(client, LONDON) == [cid]
    assert await store.customers.find("voice", LONDON) == caller
    assert await store.customers.find("voice", "+4402079460958") is None

    after_first = await snapshot(redis)
    again = await migrate_phones(store)
    assert (again.profiles, again.identities) == (0, 0)
    assert await snapshot(redis) == after_first  # the second run wrote nothing

    # A new number on the migrated profile's phone joins by the verified-phone rule.
    text = await ingest(
        client, channel="sms", external_id=LONDON, channel_message_id="SM2", text="hi"
    )
    assert text["customer_id"] == cid


def test_omni_migrate_runs_the_migration(redis_url: str) -> None:
    """`omni migrate` on the configured Redis, in its own process: it says what it
    changed, and is harmless on data that needs nothing."""
    # Its own settings only (OMNI_TEST_CLUSTER would read as an unknown [test] section).
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNI_")}
    env.update(OMNI_REDIS_URL=redis_url, OMNI_REDIS_CLUSTER=str(CLUSTER).lower())
    done = subprocess.run(
        [sys.executable, "-m", "omni.cli", "migrate"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "omni migrate: phones:" in done.stdout


def test_numbers_typed_in_text_are_found_however_written() -> None:
    # find_phones skips libphonenumber's scan of a text that cannot hold a number (no
    # digit; without a region, no plus sign): what it finds is what the scan finds.
    from omni.identity import typed_contacts

    cases = [
        ("call me on +44 20 7946 0958 please", None, "+442079460958"),
        ("call me on ＋44 20 7946 0958 please", None, "+442079460958"),  # noqa: RUF001
        ("call me on 020 7946 0958 please", None, None),  # national, no region: not read
        ("call me on 020 7946 0958 please", "GB", "+442079460958"),
        ("call me on ٠٢٠ ٧٩٤٦ ٠٩٥٨ please", "GB", "+442079460958"),
        ("my order #A-1042 has not shipped", None, None),
        ("no digits at all, only words", "US", None),
    ]
    for text, region, phone in cases:
        assert typed_contacts(text, region).get("phone") == phone, (text, region)
