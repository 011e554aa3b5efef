"""Every channel omni serves: adding one is a folder (`adapters/<name>/`) and a line here.
The core loads this list by name (`omni.channel.REGISTRY`) and imports no channel."""

from __future__ import annotations

from adapters import email, instagram, mobile, sms, voice, web, whatsapp
from omni.channel import Channel

CHANNELS: tuple[Channel, ...] = (
    instagram.CHANNEL,
    voice.CHANNEL,
    web.CHANNEL,
    mobile.CHANNEL,
    sms.CHANNEL,
    email.CHANNEL,
    whatsapp.CHANNEL,
)
