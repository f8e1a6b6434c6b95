"""Headless Chromium (Debian's ``chromium``) driven by Playwright for Python.

Browser tests never skip: without Chromium or Playwright they fail and say how
to install them (``scripts/setup`` installs both). One Chromium process serves
the whole session (started on first use, stopped at the end); each test gets a
fresh incognito-like context in it (no cookies, storage or permissions from
another test) over the DevTools protocol, and the gateway fixtures of the
integration tests.

Screenshots go to ``artifacts/`` at the top of the checkout (ignored by git).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

__all__ = ["ARTIFACTS", "DESKTOP", "PHONE", "browser_context", "chromium"]

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Overlay scrollbars, as on a phone: the layout width is the window's,
    # and full-page screenshots are not cut by a scrollbar's width.
    "--hide-scrollbars",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}  # an iPhone 12-15 in CSS pixels
START_TIMEOUT = 30.0


def chromium_path() -> str:
    path = os.environ.get("PATGATE_CHROMIUM") or shutil.which("chromium")
    if path is None:
        pytest.fail(
            "chromium is not installed (not on PATH, PATGATE_CHROMIUM unset):"
            " run scripts/setup, which installs Debian's chromium with apt-get",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One headless Chromium for the session: its DevTools websocket URL."""
    profile = tmp_path_factory.mktemp("chromium-profile")
    process = subprocess.Popen(
        [
            chromium_path(),
            *CHROMIUM_ARGS,
            "--remote-debugging-port=0",
            "--remote-debugging-address=127.0.0.1",
            f"--user-data-dir={profile}",
            "about:blank",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    found: list[str] = []
    ready = threading.Event()

    def read_stderr() -> None:
        # Chromium prints its DevTools address on stderr; keep draining it
        # afterwards so that a chatty browser never blocks on a full pipe.
        assert process.stderr is not None
        for line in process.stderr:
            match = re.search(r"DevTools listening on (ws://\S+)", line)
            if match and not found:
                found.append(match.group(1))
                ready.set()
        ready.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        if not ready.wait(START_TIMEOUT) or not found:
            pytest.fail("chromium did not start (no DevTools address)", pytrace=False)
        yield found[0]
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        reader.join(5)
        if process.stderr is not None:
            process.stderr.close()


@pytest.fixture
async def browser_context(chromium: str) -> AsyncIterator[Any]:
    """A fresh Playwright BrowserContext (desktop size) in the session's Chromium."""
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.fail(
            "playwright is not installed: run scripts/setup (it installs the"
            " project's test extra)",
            pytrace=False,
        )
    async with async_playwright() as playwright:
        browser = await playwright.chromium.connect_over_cdp(chromium)
        context = await browser.new_context(accept_downloads=True, viewport=DESKTOP)
        try:
            yield context
        finally:
            with contextlib.suppress(Exception):
                await context.close()
            # Disconnects; the session's Chromium keeps running.
            await browser.close()
