"""The `[surveys]` section: what omni asks when a conversation is resolved, per channel,
and the NPS period (omni.surveys).

    [surveys]
    resolution = ["csat"]        # asked on resolution on every channel: csat, ces ([] = none)
    comment = false              # invite a comment after the number ("4 quick and kind")
    expire_after_s = 86400       # how long an asked survey takes answers
    nps_period_days = 90         # at most one NPS per customer per period, all channels
    nps_on_resolution = false    # the NPS schedule: also ask NPS on resolution once due
    thanks = "Thank you for your feedback!"     # "" = no thanks message
    csat_question / ces_question / nps_question / comment_prompt / not_in_call  (strings)

    [surveys.channels.sms]       # a channel's own choice, over the defaults above
    resolution = ["csat", "ces"]
    comment = true
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, cast

from omni.errors import ConfigError
from omni.settings import Settings, read_bool, read_int, read_str, read_str_list

Kind = Literal["csat", "ces", "nps"]
KINDS: tuple[Kind, ...] = ("csat", "ces", "nps")
SCALES: Mapping[str, tuple[int, int]] = {"csat": (1, 5), "ces": (1, 7), "nps": (0, 10)}
LABELS: Mapping[str, str] = {"csat": "CSAT", "ces": "CES", "nps": "NPS"}

QUESTIONS: Mapping[str, str] = {
    "csat": "How satisfied are you with the help you got? (1 = very unsatisfied, "
    "5 = very satisfied)",
    "ces": "How easy was it to get your issue handled? (1 = very difficult, 7 = very easy)",
    "nps": "How likely are you to recommend us to a friend or colleague? (0 = not at all "
    "likely, 10 = extremely likely)",
}


@dataclass(frozen=True)
class ChannelSurveys:
    resolution: tuple[Kind, ...]
    comment: bool


@dataclass(frozen=True)
class SurveySettings:
    resolution: tuple[Kind, ...] = ("csat",)
    comment: bool = False
    expire_after_s: int = 86400
    nps_period_days: int = 90
    nps_on_resolution: bool = False
    thanks: str = "Thank you for your feedback!"
    comment_prompt: str = "You can add a comment after the number."
    not_in_call: str = "No survey on voice: the call had ended when the conversation was resolved."
    questions: Mapping[str, str] = field(default_factory=lambda: dict(QUESTIONS))
    channels: Mapping[str, ChannelSurveys] = field(default_factory=dict)

    def for_channel(self, channel: str) -> ChannelSurveys:
        return self.channels.get(channel) or ChannelSurveys(self.resolution, self.comment)


def _kinds(section: Mapping[str, object], name: str, default: tuple[Kind, ...]) -> tuple[Kind, ...]:
    if name.rsplit(".", 1)[1] not in section:
        return default
    kinds = read_str_list(section, name)
    for kind in kinds:
        if kind not in ("csat", "ces"):
            raise ConfigError(f"{name}: each must be csat or ces (NPS is asked by period), "
                              f"not {kind!r}")  # fmt: skip
    return tuple(cast(Kind, kind) for kind in dict.fromkeys(kinds))


def read_settings(settings: Settings) -> SurveySettings:
    section = settings.sections.get("surveys", {})
    resolution = _kinds(section, "surveys.resolution", ("csat",))
    comment = read_bool(section, "surveys.comment", False)
    questions: dict[str, str] = {
        kind: read_str(section, f"surveys.{kind}_question", QUESTIONS[kind]) for kind in KINDS
    }
    channels: dict[str, ChannelSurveys] = {}
    raw_channels = section.get("channels", {})
    if not isinstance(raw_channels, dict):
        raise ConfigError("surveys.channels: must be a table of channel tables")
    for name, raw in raw_channels.items():
        if not isinstance(raw, dict):
            raise ConfigError(f"surveys.channels.{name}: must be a table")
        where = f"surveys.channels.{name}"
        channels[name] = ChannelSurveys(
            _kinds(raw, f"{where}.resolution", resolution),
            read_bool(raw, f"{where}.comment", comment),
        )
    defaults = SurveySettings()
    return SurveySettings(
        resolution=resolution,
        comment=comment,
        expire_after_s=read_int(section, "surveys.expire_after_s", 86400, low=60,
                                high=30 * 86400),
        nps_period_days=read_int(section, "surveys.nps_period_days", 90, low=0, high=3650),
        nps_on_resolution=read_bool(section, "surveys.nps_on_resolution", False),
        thanks=read_str(section, "surveys.thanks", defaults.thanks),
        comment_prompt=read_str(section, "surveys.comment_prompt", defaults.comment_prompt),
        not_in_call=read_str(section, "surveys.not_in_call", defaults.not_in_call),
        questions=questions,
        channels=channels,
    )  # fmt: skip
