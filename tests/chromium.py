"""Headless Debian Chromium for the page tests: the DOM after the page's scripts ran, and screenshots."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]  # fmt: skip


def _chromium(page: Path, actions: list[str]) -> str:
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("Debian's chromium is needed (.ci/run installs it)")
    flags = [*FLAGS, f"--user-data-dir={page.parent / 'profile'}", *actions]
    result = subprocess.run([binary, *flags, page.as_uri()], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def chromium_dom(page: Path) -> str:
    """The page's DOM once loaded (its scripts run)."""
    return _chromium(page, ["--dump-dom"])


def chromium_screenshot(page: Path, png: Path, size: str = "1600,1000") -> Path:
    """A PNG of the page in a window of `size` (width,height) pixels."""
    _chromium(page, [f"--window-size={size}", f"--screenshot={png}"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return png
