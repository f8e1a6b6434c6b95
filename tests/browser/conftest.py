"""Headless Chromium (Debian's ``chromium``) driven by Playwright for Python.

Browser tests never skip: without Chromium or Playwright they fail and say how
to install them (``scripts/setup`` installs both). Each test gets a fresh
profile directory, and the gateway fixtures of the integration tests.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

__all__ = ["browser_context"]

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"


def chromium_path() -> str:
    path = os.environ.get("PATGATE_CHROMIUM") or shutil.which("chromium")
    if path is None:
        pytest.fail(
            "chromium is not installed (not on PATH, PATGATE_CHROMIUM unset):"
            " run scripts/setup, which installs Debian's chromium with apt-get",
            pytrace=False,
        )
    return path


@pytest.fixture
async def browser_context(tmp_path: Path) -> AsyncIterator[Any]:
    """A Playwright BrowserContext in a fresh Chromium profile."""
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.fail(
            "playwright is not installed: run scripts/setup (it installs the"
            " project's test extra)",
            pytrace=False,
        )
    executable = chromium_path()
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=executable,
            headless=True,
            args=CHROMIUM_ARGS,
            accept_downloads=True,
            viewport={"width": 1280, "height": 800},
        )
        try:
            yield context
        finally:
            await context.close()
