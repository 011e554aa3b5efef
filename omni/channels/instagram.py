"""The instagram channel's routes (placeholder until the channel is wired)."""

from __future__ import annotations

from typing import Any

import aiohttp

from omni.delivery import Sender
from omni.route import Route
from omni.settings import Settings
from omni.store import Store

NAME = "instagram"
ROUTES: tuple[Route, ...] = ()


def setup(
    settings: Settings, session: aiohttp.ClientSession, store: Store
) -> tuple[Any | None, Sender | None]:
    return None, None
