"""Surveys at the end of a call (omni.surveys): the call's status kept from every
webhook, so the core knows whether the caller is still on the line; the open survey's
question asked inside the next <Gather> (keypad digits); after the answer, the next
question or thanks and goodbye."""

from __future__ import annotations

from aiohttp import web

from adapters.voice.config import NAME
from adapters.voice.protocol import VoiceAdapter, status_supersedes
from adapters.voice.speech import GOODBYE
from adapters.voice.webhooks import CallWebhook
from omni.calls import record_status
from omni.state import SERVICES, STORE


async def note_status(request: web.Request, cid: str, hook: CallWebhook) -> None:
    """Every webhook of a call says its status: kept, so the core knows the call is live
    (a survey is asked on voice only then)."""
    if hook.status:
        await record_status(
            request.app[STORE], cid, hook.call_id, hook.status, hook.sequence, status_supersedes
        )


async def survey_question(request: web.Request, cid: str) -> tuple[str, ...]:
    """The open survey's question when it was asked on voice (else nothing)."""
    surveys = request.app[SERVICES].surveys
    survey = await surveys.open_survey(cid)
    if survey.get("channel") != NAME or not survey.get("kind"):
        return ()
    return (surveys.question_text(survey["kind"], NAME),)


async def after_answer(
    request: web.Request, voice: VoiceAdapter, hook: CallWebhook, cid: str
) -> str:
    """The next question of the survey, or thanks and goodbye."""
    question = await survey_question(request, cid)
    if question:
        return voice.speak(question, turn=hook.next_turn)
    return voice.goodbye(request.app[SERVICES].surveys.config.thanks or GOODBYE)
