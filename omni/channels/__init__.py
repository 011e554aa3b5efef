"""The channels' HTTP side, one module per channel. Each module declares:

    NAME     the channel's name ("instagram")
    ROUTES   its routes (tuple of omni.route.Route), authenticated the channel's own way
    setup(settings, session, store) -> (adapter or None, sender or None)
             the configured adapter (None when the channel is not configured, and its
             routes then answer 404), and the worker's sender for replies on it
    ECHOES   (optional) True when the channel sends our own sends back to its webhook

The routes call the channel's adapter to verify and parse, and hand the events to the
core (`omni.inbox.Inbox`), which stores them, tells the bot and answers only after.
"""

from __future__ import annotations

from types import ModuleType

from omni.channels import instagram, mobile, voice, web, widget

# `widget` only serves the web chat's script (no adapter, no sender).
MODULES: tuple[ModuleType, ...] = (instagram, voice, web, mobile, widget)
