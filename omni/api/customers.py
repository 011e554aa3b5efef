"""Customer resources: context, facts, cart, profile, identities, history, search."""

from __future__ import annotations

import re

import msgspec
from aiohttp import web

from omni.api.messages import check_channel
from omni.auth import caller, reads_only
from omni.clock import now_ms
from omni.errors import (
    BadRequest,
    NotFound,
    PreconditionFailed,
    PreconditionRequired,
    ValidationFailed,
)
from omni.ids import decode_cursor
from omni.model import (
    FACT_VALUE_MAX_BYTES,
    PAGE_DEFAULT,
    PAGE_MAX,
    CartInput,
    ConversationPatch,
    FactsPatch,
    IdentityLink,
    Known,
    PendingInput,
    ProfilePatch,
    SearchResult,
    json_size,
)
from omni.phones import canonical_external_id, normalize_phone
from omni.state import SERVICES, SETTINGS, STORE
from omni.web_io import (
    etag,
    if_match,
    json_response,
    not_modified,
    path_customer_id,
    query_channel,
    query_int,
    query_str,
    read_json,
)

ASK_MAX = 20
_FACT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
_PROFILE_ATTEMPTS = 20  # re-reads of a profile that others keep changing under a patch


async def _publish(request: web.Request, cid: str, type: str, data: object) -> None:
    """Tell agents' live streams (and sockets) what changed."""
    await request.app[SERVICES].live.publish(cid, type, msgspec.to_builtins(data))


async def _context_response(
    request: web.Request, cid: str, status: int = 200, *, follow: bool = False
) -> web.Response:
    # By id, an absorbed customer answers 308 to its survivor; by identity, the
    # identity may still point at it while a merge runs, so its survivor answers.
    store = request.app[STORE]
    context = await store.contexts.read(cid, follow=follow)
    tag = etag(context.version)
    ask = _ask(request)
    if ask:
        known = {
            name: Known(value=f.value, source=f.source, at=f.at)
            if (f := context.facts.get(name))
            else None
            for name in ask
        }
        answered = sum(1 for k in known.values() if k is not None)
        if answered:
            # Each known fact is a question the bot does not have to ask the customer.
            await store.parts.count(context.customer.id, "q_answered", answered)
            await request.app[SERVICES].reports.questions(
                context.customer.id, context.customer.last_channel or "unknown", "q_ans",
                answered, now_ms(),
            )  # fmt: skip
        context = msgspec.structs.replace(context, known=known)
    elif status == 200 and not_modified(request, tag):
        return web.Response(status=304, headers={"ETag": tag})
    return json_response(context, status=status, headers={"ETag": tag})


def _ask(request: web.Request) -> list[str]:
    raw = query_str(request, "ask")
    if raw is None:
        return []
    # Up to ASK_MAX entries, empty ones (a trailing comma) ignored; spaces around a name
    # are allowed, nothing else (the OpenAPI pattern says exactly this).
    entries = raw.split(",")
    names = [name for entry in entries if (name := entry.strip(" "))]
    if len(entries) > ASK_MAX or not all(_FACT_NAME.fullmatch(n) for n in names):
        raise BadRequest(
            f"ask is up to {ASK_MAX} comma-separated fact names (letters, digits, _ . -)",
            field="ask",
        )
    return names


async def patch_conversation(request: web.Request) -> web.Response:
    cid = path_customer_id(request)
    patch = await read_json(request, ConversationPatch)
    if isinstance(patch.pending, PendingInput) and patch.pending.channel is not None:
        check_channel(request, patch.pending.channel, field="pending.channel")
    channel = request.query.get("channel")
    _, repeated = await request.app[STORE].parts.patch_conversation(
        cid, patch, if_match(request), channel
    )
    if repeated:
        where = channel or (patch.pending.channel if isinstance(patch.pending, PendingInput)
                            else None)  # fmt: skip
        await request.app[SERVICES].reports.questions(
            cid, where or await request.app[SERVICES].reports.last_channel(cid), "q_rep", 1,
            now_ms(),
        )  # fmt: skip
    await _publish(request, cid, "conversation", patch)
    return await _context_response(request, cid)


def _asks_nothing(request: web.Request) -> bool:
    return "ask" not in request.query  # an ask counts the facts it finds (a write)


@reads_only(_asks_nothing)
async def context(request: web.Request) -> web.Response:
    return await _context_response(request, path_customer_id(request))


@reads_only(_asks_nothing)
async def context_by_identity(request: web.Request) -> web.Response:
    channel = query_str(request, "channel", required=True) or ""
    external_id = query_str(request, "external_id", required=True) or ""
    check_channel(request, channel)
    region = request.app[SETTINGS].identity.default_region
    external_id = canonical_external_id(channel, external_id, region)
    cid = await request.app[STORE].customers.find(channel, external_id)
    if cid is None:
        raise NotFound(f"no customer has that {channel} identity")
    return await _context_response(request, cid, follow=True)


async def patch_facts(request: web.Request) -> web.Response:
    cid = path_customer_id(request)
    patch = await read_json(request, FactsPatch)
    for name, fact in patch.facts.items():
        if fact is not None and json_size(fact.value) > FACT_VALUE_MAX_BYTES:
            raise ValidationFailed(
                f"a fact value is limited to {FACT_VALUE_MAX_BYTES} bytes of JSON",
                field=f"facts.{name}.value",
            )
    rev = await request.app[STORE].parts.patch_facts(cid, patch, if_match(request))
    await _publish(request, cid, "fact", {"facts": patch.facts, "version": rev})
    return await _context_response(request, cid)


async def get_cart(request: web.Request) -> web.Response:
    cart, rev = await request.app[STORE].parts.cart(path_customer_id(request))
    tag = etag(rev)
    if not_modified(request, tag):
        return web.Response(status=304, headers={"ETag": tag})
    return json_response(cart, headers={"ETag": tag})


async def put_cart(request: web.Request) -> web.Response:
    cid = path_customer_id(request)
    version = if_match(request)
    if version is None:
        raise PreconditionRequired(
            "PUT cart needs If-Match with the version you read (GET the cart for its ETag)"
        )
    data = await read_json(request, CartInput)
    if len({item.currency for item in data.items}) > 1:
        raise ValidationFailed("every item in a cart must have the same currency", field="items")
    if data.stage == "placed" and not data.order_id:
        raise ValidationFailed("a placed cart needs its order_id", field="order_id")
    cart, rev = await request.app[STORE].parts.put_cart(cid, data, version, caller(request).name)
    await _publish(request, cid, "cart", {"cart": cart, "version": rev})
    await request.app[SERVICES].reports.cart_changed(
        cid, cart.stage, cart.totals.item_count, cart.order_id, now_ms()
    )
    return json_response(cart, headers={"ETag": etag(rev)})


async def patch_profile(request: web.Request) -> web.Response:
    cid = path_customer_id(request)
    patch = await read_json(request, ProfilePatch)
    changes = msgspec.structs.asdict(patch)
    changes = {k: v for k, v in changes.items() if v is not None}
    store = request.app[STORE]
    if "phone" in changes:
        # Read in the customer's region when their locale names one (omni.phones).
        locale = changes.get("locale") or (await store.customers.profile(cid))[0].locale
        region = request.app[SETTINGS].identity.default_region
        phone = normalize_phone(changes["phone"], region, locale=locale)
        if phone is None:
            raise ValidationFailed(
                "phone is not a valid number: write it with its country code, like "
                "+14155550100 (a national number is read in the customer's locale's "
                "country, else in [identity] default_region)",
                field="phone",
            )
        changes["phone"] = phone
    given = if_match(request)
    attempt = 0
    while True:
        old, rev = await store.customers.profile(cid)
        fields = dict(changes)
        # A changed email or phone is unverified unless this request says otherwise.
        if "email" in fields and fields["email"] != old.email:
            fields.setdefault("email_verified", False)
        if "phone" in fields and fields["phone"] != old.phone:
            fields.setdefault("phone_verified", False)
        new = msgspec.structs.replace(old, **fields)
        # Without an If-Match, write only over the profile just read: a concurrent edit
        # makes the write stale and the patch is merged again instead of losing that edit.
        try:
            _, before = await store.customers.put_profile(cid, new, given or rev)
            break
        except PreconditionFailed:
            attempt += 1
            if given or attempt >= _PROFILE_ATTEMPTS:
                raise
    await request.app[STORE].search.index_profile(cid, before, new)
    await _publish(request, cid, "profile", {"profile": new})
    return await _context_response(request, cid)


async def link_identity(request: web.Request) -> web.Response:
    cid = path_customer_id(request)
    link = await read_json(request, IdentityLink)
    check_channel(request, link.channel)
    region = request.app[SETTINGS].identity.default_region
    external_id = canonical_external_id(link.channel, link.external_id, region)
    link = msgspec.structs.replace(link, external_id=external_id)
    identity, created = await request.app[STORE].customers.link_identity(cid, link)
    if created:
        await request.app[STORE].audit.record(
            [cid],
            "link",
            evidence="linked by an agent" + (" as verified" if link.verified else ""),
            identity=(link.channel, link.external_id),
        )
        await _publish(request, cid, "identity", {"identity": identity})
    return json_response(identity, status=201 if created else 200)


@reads_only()
async def history(request: web.Request) -> web.Response:
    cid = path_customer_id(request)
    limit = query_int(request, "limit", default=PAGE_DEFAULT, low=1, high=PAGE_MAX)
    before = query_str(request, "before")
    channel = query_channel(request, request.app[SETTINGS].channels.enabled)
    page = await request.app[STORE].timeline.history(
        cid,
        limit=limit,
        before=decode_cursor(before) if before else None,
        channel=channel,
        follow=False,
    )
    return json_response(page)


async def find_customers(request: web.Request) -> web.Response:
    q = query_str(request, "q", required=True) or ""
    settings = request.app[SETTINGS]
    region = settings.identity.default_region or None
    found = await request.app[STORE].search.find(q, settings.channels.enabled, region)
    return json_response(SearchResult(customers=found))
