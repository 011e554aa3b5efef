"""What the browser tests share: Debian's chromium, headless, driven by Playwright (never
a browser of Playwright's own download; `make browser` installs it), and a picture to
show without a network."""

from __future__ import annotations

import base64
import shutil
import struct
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
GUARD_MS = 15_000  # how long the browser waits for what a person would see


@asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    """A headless chromium (Playwright's Browser), closed after."""
    from playwright.async_api import async_playwright, expect

    # `make test` installs it first where it can (as root); elsewhere it says how.
    assert CHROMIUM is not None, "no chromium: `make browser` or apt-get install -y chromium"
    expect.set_options(timeout=GUARD_MS)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        try:
            yield browser
        finally:
            await browser.close()


def png(width: int = 96, height: int = 64, rgb: tuple[int, int, int] = (193, 53, 132)) -> str:
    """A small picture (a data: URL), so the page shows an image without a network."""
    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
    data += chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    return "data:image/png;base64," + base64.b64encode(data).decode()
