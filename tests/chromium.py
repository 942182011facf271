"""How this project launches Chromium: one list of flags for tests, fixture recorders and benchmarks."""

from __future__ import annotations

import os
import shutil

CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    # The machine's network is closed: background services would only fail, many at a time.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def chromium_executable() -> str | None:
    """``REPLAY_CHROMIUM`` (e.g. Playwright's own browser elsewhere), else Debian's ``chromium``."""
    return os.environ.get("REPLAY_CHROMIUM") or shutil.which("chromium")
