"""`GET /v1/reports/service` (omni.report_query) and `POST /v1/customers/{id}/surveys`
(omni.surveys): the customer-experience figures, and a survey asked on demand."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Literal

import msgspec
from aiohttp import web
from msgspec import Meta

from omni.api.messages import check_channel
from omni.errors import ValidationFailed
from omni.report_model import ServiceReport
from omni.report_query import GROUP_BY, ReportReader
from omni.state import SERVICES
from omni.web_io import json_response, path_customer_id, read_json

DEFAULT_DAYS = 30


class SurveyRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`POST /v1/customers/{id}/surveys`: ask a survey now. NPS is asked at most once per
    customer per `[surveys] nps_period_days`, across channels (409 within it)."""

    kind: Literal["nps", "csat", "ces"] = "nps"
    channel: Annotated[
        str, Meta(min_length=1, max_length=32, description='a channel, or "current": the '
                  "one the customer last wrote on")
    ] = "current"  # fmt: skip


def _day(request: web.Request, name: str, default: date) -> date:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        if len(raw) == 10:
            return date.fromisoformat(raw)
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationFailed(
            f"{name} must be a date (YYYY-MM-DD) or an RFC 3339 time, not {raw!r}", field=name
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).date()


def _year_after(day: date) -> date:
    try:
        return day.replace(year=day.year + 1)
    except ValueError:  # 29 February
        return day.replace(year=day.year + 1, day=28) + timedelta(days=1)


def report_range(request: web.Request) -> tuple[date, date]:
    today = datetime.now(UTC).date()
    end = _day(request, "to", today)
    start = _day(request, "from", end - timedelta(days=DEFAULT_DAYS - 1))
    if start > end:
        raise ValidationFailed(f"from ({start}) is after to ({end})", field="from")
    if end > _year_after(start):
        raise ValidationFailed(
            f"the range {start} to {end} is over 1 year; ask for a year or less", field="to"
        )
    return start, end


async def service(request: web.Request) -> web.Response:
    start, end = report_range(request)
    group_by = request.query.get("group_by", "channel")
    if group_by not in GROUP_BY:
        raise ValidationFailed(
            f"group_by must be one of {', '.join(GROUP_BY)}, not {group_by!r}", field="group_by"
        )
    channel = request.query.get("channel") or None
    if channel is not None:
        check_channel(request, channel)
    services = request.app[SERVICES]
    reader = ReportReader(services.reports.redis, services.reports.config)
    figures = await reader.service(start, end, channel, group_by)
    return json_response(msgspec.convert(figures, ServiceReport, from_attributes=False))


async def ask_survey(request: web.Request) -> web.Response:
    cid = path_customer_id(request)
    body = await read_json(request, SurveyRequest)
    asked = await request.app[SERVICES].surveys.ask(cid, body.kind, body.channel)
    return json_response(asked, status=201)
