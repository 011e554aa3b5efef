"""The service report's shape (`GET /v1/reports/service`), for its OpenAPI schema and to
check the figures `omni.report_query` computes against it."""

from __future__ import annotations

from msgspec import Struct


class Durations(Struct, frozen=True):
    count: int
    mean_s: float | None
    median_s: float | None
    p90_s: float | None


class FirstContact(Struct, frozen=True):
    resolved: int
    reopened: int  # a new conversation within [reports] reopen_window_s of the resolution
    rate: float | None  # (resolved - reopened) / resolved


class SurveyFigures(Struct, frozen=True):
    scale: list[int]
    sent: int  # surveys asked
    answered: int
    response_rate: float | None  # answered / sent (answers count on the day asked)
    average: float | None


class NpsFigures(SurveyFigures, frozen=True):
    promoters: int  # 9-10
    passives: int  # 7-8
    detractors: int  # 0-6
    score: float | None  # % promoters - % detractors


class RepeatedQuestions(Struct, frozen=True):
    prevented: int  # questions omni answered for a bot (answered_for_bot)
    let_through: int  # questions a bot asked although omni knew (repeated_questions)


class Carts(Struct, frozen=True):
    placed: int
    started_elsewhere: int  # placed on another channel than the cart was started on


class CrossChannel(Struct, frozen=True):
    conversations: int  # resolved conversations that crossed channels
    without_repeated_question: int


class Figures(Struct, frozen=True):
    conversations: int
    resolved: int
    first_response: Durations
    resolution: Durations
    first_contact_resolution: FirstContact
    csat: SurveyFigures
    ces: SurveyFigures
    nps: NpsFigures
    repeated_questions: RepeatedQuestions
    channel_switches: int
    carts: Carts
    cross_channel: CrossChannel
    returning_customers: int | None  # None by agent: a customer is not an agent's


class Group(Figures, frozen=True):
    key: str | None = None  # the channel, agent id ("bot") or day; None: no agent


class ServiceReport(Struct, frozen=True, rename={"start": "from", "end": "to"}):
    start: str
    end: str
    channel: str | None
    group_by: str
    totals: Figures
    groups: list[Group]
