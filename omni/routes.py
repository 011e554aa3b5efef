"""The route table: every public route once, with what the OpenAPI document says of it.

`add_routes` registers these on the app (wrapping each in its role check) and
`omni.openapi.build` describes the same list, so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from omni.api import (
    console,
    conversations,
    customers,
    erasure,
    events,
    handoff,
    links,
    merges,
    messages,
    metrics,
    ops,
    replies,
    reports,
)
from omni.auth import require
from omni.channel import Channel, load
from omni.erasure import Export
from omni.links import Linked, LinkToken, LinkTokenRequest, Redeem
from omni.merge import MergeResult
from omni.merge_preview import MergePreview
from omni.model import (
    Cart,
    CartInput,
    Context,
    Conversation,
    ConversationPatch,
    FactsPatch,
    HandoffRequest,
    HistoryPage,
    Identity,
    IdentityLink,
    InboundMessage,
    Message,
    OutboundRequest,
    ProfilePatch,
    ResolveRequest,
    SearchResult,
    TypingRequest,
)
from omni.report_model import ServiceReport
from omni.route import PAGE_LIMIT, Param, Route
from omni.store.audit import AuditPage
from omni.store.inbox import InboxPage
from omni.surveys import Asked
from omni.unmerge import UnmergeResult

_ID = Param("id", "path", "customer id (cus_…)", required=True)
_IF_MATCH = Param("If-Match", "header", "the ETag you read; a stale one gets 412")
_FACT = r"[A-Za-z_][A-Za-z0-9_.-]{0,63}"
_ASK = Param(
    "ask",
    "query",
    "up to 20 comma-separated fact names the bot is about to ask for",
    {"type": "string", "pattern": rf"^ *({_FACT})? *(, *({_FACT})? *){{0,19}}$"},
)
_IF_MATCH_REQUIRED = Param(
    "If-Match", "header", "the ETag you read (or *); a stale one gets 412", required=True
)
_IF_NONE_MATCH = Param("If-None-Match", "header", "an ETag you hold; unchanged gets 304")
# A stream id; on the service-wide stream in a cluster, one per part joined by "."
# (omni.live: up to [redis] shards' 1024).
_EVENT_ID = {
    "type": "string",
    "pattern": r"^\s*(\d{1,20}-\d{1,20}(\.\d{1,20}-\d{1,20}){0,1023})?\s*$",
}
_STREAM = (
    Param("Last-Event-ID", "header", "the id of the last event you got: resume after it",
          _EVENT_ID),
    Param("last_event_id", "query", "the same, for a client that cannot set headers",
          _EVENT_ID),
    Param("access_token", "query", "a token from GET /v1/events/token, instead of "
          "Authorization (browsers' EventSource)"),
)  # fmt: skip

ROUTES: tuple[Route, ...] = (
    Route("GET", "/healthz", ops.healthz, "Liveness: the process answers", "operations"),
    Route("GET", "/readyz", ops.readyz, "Readiness: Redis answers (503 when not)", "operations",
          errors=(503,)),
    Route("GET", "/openapi.json", ops.openapi, "This document", "operations"),
    Route("POST", "/v1/messages", messages.ingest,
          "Ingest a normalized inbound message (idempotent on channel + channel_message_id)",
          "messages", role="bot", body=InboundMessage, response=Message, status=201,
          errors=(400, 413, 415, 422)),
    Route("GET", "/v1/context", customers.context_by_identity,
          "Resolve a channel identity and return its customer's context", "context", role="bot",
          response=Context, etag=True, errors=(400, 404, 422),
          params=(Param("channel", "query", "channel name", required=True),
                  Param("external_id", "query", "the customer's id on that channel",
                        required=True), _IF_NONE_MATCH)),
    Route("GET", "/v1/customers", customers.find_customers,
          "Find customers by name, e-mail, phone (E.164) or channel:external_id", "customers",
          role="agent", response=SearchResult, errors=(400, 422),
          params=(Param("q", "query", "what to look for", required=True),)),
    Route("GET", "/v1/customers/{id}/context", customers.context,
          "The customer's context document, with its continuity block; ?ask=a,b says which "
          "of those facts omni already knows", "context", role="bot", response=Context,
          etag=True, params=(_ID, _IF_NONE_MATCH, _ASK), errors=(400, 404)),
    Route("PATCH", "/v1/customers/{id}/facts", customers.patch_facts,
          "Set facts (objects) or clear them (null); If-Match honoured", "context", role="bot",
          body=FactsPatch, response=Context, etag=True, params=(_ID, _IF_MATCH),
          errors=(400, 404, 412, 413, 415, 422)),
    Route("PATCH", "/v1/customers/{id}/conversation", customers.patch_conversation,
          "Set or clear (null) the question the bot is waiting on ({fact, prompt}) and the "
          "topic; the next channel's bot sees it in the context's continuity block", "context",
          role="bot", body=ConversationPatch, response=Context, etag=True,
          params=(_ID, _IF_MATCH), errors=(400, 404, 412, 413, 415, 422)),
    Route("PATCH", "/v1/customers/{id}/profile", customers.patch_profile,
          "Update the profile (name, e-mail, phone, locale, verified flags)", "customers",
          role="agent", body=ProfilePatch, response=Context, etag=True, params=(_ID, _IF_MATCH),
          errors=(400, 404, 412, 413, 415, 422)),
    Route("GET", "/v1/customers/{id}/cart", customers.get_cart,
          "The cart / purchase journey", "cart", role="bot", response=Cart, etag=True,
          params=(_ID, _IF_NONE_MATCH), errors=(404,)),
    Route("PUT", "/v1/customers/{id}/cart", customers.put_cart,
          "Replace the cart; If-Match is required", "cart", role="bot", body=CartInput,
          response=Cart, etag=True, params=(_ID, _IF_MATCH_REQUIRED),
          errors=(400, 404, 412, 413, 415, 422, 428)),
    Route("POST", "/v1/customers/{id}/identities", customers.link_identity,
          "Link a channel identity to this customer", "customers", role="agent",
          body=IdentityLink, response=Identity, status=201, params=(_ID,),
          errors=(400, 404, 409, 413, 415, 422)),
    Route("POST", "/v1/customers/{id}/merge", merges.merge,
          "Merge another customer into this one: one timeline, identities, facts (newest "
          "wins), the more recent cart; idempotent; the absorbed id then answers 308. The "
          "answer's merge_id undoes it. With \"dry_run\": true, the preview "
          "(MergePreview): both records, what would result, each fact's conflict and "
          "winner, the evidence; nothing written", "customers", role="agent",
          body=merges.MergeRequest, response=(MergeResult, MergePreview), params=(_ID,),
          errors=(400, 404, 409, 413, 415, 422)),
    Route("POST", "/v1/merges/{merge_id}/undo", merges.undo,
          "Undo a merge: each customer gets its own identities, facts, profile and cart "
          "back (what changed since stays), messages stored since go to the customer "
          "whose identity sent them, the absorbed id stops answering 308, both timelines "
          "and audit logs say so; a repeat after a crash finishes it; 409 when already "
          "undone or erased", "customers", role="agent", response=UnmergeResult,
          errors=(404, 409),
          params=(Param("merge_id", "path", "the merge's id (mrg_…)", required=True),)),
    Route("GET", "/v1/customers/{id}/audit", merges.audit,
          "The customer's audit log of identity changes, newest first: joins on verified "
          "evidence, link tokens, agents' links, merges and undos, each with who, when, "
          "the evidence and the request id; after an erasure, ids only", "customers",
          role="agent", response=AuditPage, errors=(400, 404),
          params=(_ID, PAGE_LIMIT, Param("before", "query", "next_cursor from the previous page"))),
    Route("DELETE", "/v1/customers/{id}", erasure.erase,
          "Erase everything omni holds about the customer and every customer merged into "
          "it (admins); 204 when done, 404 for an id with nothing (left) to erase; an "
          "absorbed id answers 308 to its survivor; a repeat finishes one cut short",
          "customers", role="admin", status=204, params=(_ID,), errors=(404,)),
    Route("GET", "/v1/customers/{id}/export", erasure.export,
          "Everything omni holds about the customer and those merged into it, as one JSON "
          "download (admins): profile, identities, facts, cart, conversation, devices "
          "(without push tokens), calls, deliveries, and every message newest first; an "
          "absorbed id answers 308 to its survivor, one being erased 409", "customers",
          role="admin", response=Export, params=(_ID,), errors=(404, 409)),
    Route("POST", "/v1/customers/{id}/link-tokens", links.issue,
          "A short-lived, single-use token (with a URL and a six-digit code) that links "
          "another channel's identity to this customer when presented there", "continuity",
          role="bot", body=LinkTokenRequest, response=LinkToken, status=201, params=(_ID,),
          errors=(400, 404, 413, 415, 422)),
    Route("POST", "/v1/link-tokens/redeem", links.redeem,
          "Present a link token (or its code) from a channel identity: the identity joins "
          "the token's customer (its own record merged in); forged 401, expired or used 410",
          "continuity", role="bot", body=Redeem, response=Linked,
          errors=(400, 401, 404, 410, 413, 415, 422)),
    Route("GET", "/v1/customers/{id}/history", customers.history,
          "The cross-channel timeline, newest first, cursor-paginated", "history", role="bot",
          response=HistoryPage, errors=(400, 404),
          params=(_ID,
                  PAGE_LIMIT,
                  Param("before", "query", "next_cursor from the previous page",
                        {"type": "string", "pattern": "^[A-Za-z0-9_=-]*$"}),
                  Param("channel", "query", "only this channel's messages"))),
    Route("POST", "/v1/customers/{id}/messages", replies.send,
          "Send a reply (bot or agent) on the given channel or the one the customer used "
          "last; 202 with status queued, the delivery status then shows in the history",
          "messages", role="bot", body=OutboundRequest, response=Message, status=202,
          params=(_ID,), errors=(400, 404, 413, 415, 422)),
    Route("POST", "/v1/customers/{id}/typing", replies.typing,
          "A bot or an agent is writing to the customer (state start) or stopped: shown "
          "live in the customer's chat (web widget, app) until the reply; not in the history",
          "messages", role="bot", body=TypingRequest, status=204, params=(_ID,),
          errors=(400, 404, 415, 422)),
    Route("GET", "/v1/customers/{id}/deliveries", replies.deliveries,
          "The customer's deliveries (replies and bot webhooks), newest first", "deliveries",
          role="agent", response=replies.DeliveryList, params=(_ID, PAGE_LIMIT), errors=(400, 404)),
    Route("GET", "/v1/deliveries/dead", replies.dead_letters,
          "Dead letters: deliveries that failed for good, oldest first", "deliveries",
          role="agent", response=replies.DeadLetterPage, errors=(400,),
          params=(PAGE_LIMIT, Param("after", "query", "next_after from the previous page",
                                {"type": "string", "pattern": f"^({replies.ENTRY_ID})?$"}))),
    Route("POST", "/v1/deliveries/{delivery_id}/retry", replies.retry,
          "Send a dead letter again, with a fresh set of attempts", "deliveries",
          role="agent", status=202, errors=(404,),
          params=(Param("delivery_id", "path", "the delivery id (dlv_…)", required=True),)),
    # Agents: live events, who answers the customer, service metrics, the console.
    Route("GET", "/v1/events/token", events.token,
          "A short-lived token for the event streams' ?access_token= (a browser's "
          "EventSource cannot send Authorization); it opens streams for 5 minutes",
          "events", role="agent", response=events.EventToken),
    Route("GET", "/v1/customers/{id}/events", events.customer_events,
          "The customer's live events as Server-Sent Events (text/event-stream): messages "
          "in and out with their delivery status, facts, cart, profile, conversation, "
          "handoff, merge; resend Last-Event-ID to get what you missed, in order",
          "events", role="agent", params=(_ID, *_STREAM), errors=(400, 404)),
    Route("GET", "/v1/events", events.all_events,
          "Every customer's live events as Server-Sent Events (a team inbox); "
          "Last-Event-ID as for one customer's", "events", role="agent", params=_STREAM,
          errors=(400,)),
    Route("POST", "/v1/customers/{id}/handoff", handoff.handoff,
          "Who answers the customer: to an agent (a bot without agent_id: the agents' "
          "queue, shown as pending), or back to the bot (agents only); the bot then gets "
          "handoff events instead of messages to answer", "conversation", role="bot",
          body=HandoffRequest, response=Conversation, params=(_ID,),
          errors=(400, 404, 413, 415, 422)),
    Route("GET", "/v1/conversations", conversations.inbox,
          "The team inbox: each customer's current conversation in a status (waiting: in "
          "the agents' queue; open; resolved), oldest waiting first, with its customer, "
          "channel, waiting time and last message; cursor-paginated", "conversation",
          role="agent", response=InboxPage, errors=(400, 422),
          params=(Param("status", "query", "waiting (default), open or resolved",
                        {"type": "string", "enum": ["waiting", "open", "resolved"]}),
                  Param("assignee", "query", "only conversations this agent holds"),
                  Param("channel", "query", "only conversations whose customer last wrote "
                        "on this channel"),
                  PAGE_LIMIT,
                  Param("after", "query", "next_cursor from the previous page"))),
    Route("POST", "/v1/customers/{id}/resolve", handoff.resolve,
          "The conversation is resolved (by the bot, or by an agent when one took part); "
          "the customer's next message starts a new one", "conversation", role="bot",
          body=ResolveRequest, response=Conversation, params=(_ID,),
          errors=(400, 404, 413, 415, 422)),
    Route("POST", "/v1/customers/{id}/surveys", reports.ask_survey,
          "Ask the customer a survey now on a channel (or \"current\": where they last "
          "wrote): NPS 0-10 by default, or csat / ces; NPS at most once per customer per "
          "[surveys] nps_period_days across channels (409 with next_allowed_at within it; "
          "409 too for voice when no call is live)", "surveys", role="agent",
          body=reports.SurveyRequest, response=Asked, status=201, params=(_ID,),
          errors=(400, 404, 409, 413, 415, 422)),
    Route("GET", "/v1/reports/service", reports.service,
          "The service report for a range of days (UTC; a year at most): conversations, "
          "first-response and resolution times (median, p90), first-contact resolution, "
          "CSAT / CES / NPS, repeated questions prevented and let through, channel "
          "switches, carts placed on another channel than started, conversations continued "
          "across channels, returning customers; in total and by channel, agent or day",
          "reports", role="agent", response=ServiceReport, errors=(422,),
          params=(Param("from", "query", "first day, YYYY-MM-DD or RFC 3339 (default: 29 "
                        "days before to)"),
                  Param("to", "query", "last day, included (default: today, UTC)"),
                  Param("channel", "query", "only this channel's figures"),
                  Param("group_by", "query", "channel (default), agent or day",
                        {"type": "string", "enum": ["channel", "agent", "day"]}))),
    Route("GET", "/metrics", metrics.exposition,
          "Prometheus metrics (text format 0.0.4): first-response time, resolutions and "
          "handoffs per channel, service-wide; live listeners per process", "operations",
          role="agent"),
    Route("GET", "/console", console.page,
          "The agents' console (HTML; it signs in with an agent key)", "console"),
    Route("GET", "/console/{asset}", console.asset, "The console's script and styles",
          "console", params=(Param("asset", "path", "console.js, identity.js or console.css",
                                   required=True),), errors=(404,)),
)  # fmt: skip


def all_routes(channels: Sequence[Channel] | None = None) -> tuple[Route, ...]:
    """The core's routes and every channel's (those authenticate the channel's way);
    without `channels`, those of the default registry (`omni.channel.load`)."""
    listed = load() if channels is None else channels
    return ROUTES + tuple(r for channel in listed for r in channel.routes)


def add_routes(app: web.Application, channels: Sequence[Channel]) -> None:
    for route in all_routes(channels):
        # The event streams also take ?access_token= (omni.api.events says why).
        guard = events.stream_guard if route.handler in events.TOKEN_AUTH else require
        handler = guard(route.role, route.handler) if route.role else route.handler
        app.router.add_route(route.method, route.path, handler)
    events.setup(app)
