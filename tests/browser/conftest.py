"""Real Chromium for browser tests, driven by Playwright's sync API.

Chromium comes from REPLAY_CHROMIUM or the system `chromium` (Debian's
package); Playwright's own browser download is never used. Without a browser
these tests skip, except under CI=true where that is a failure.
"""
import os
import shutil
from pathlib import Path

import pytest

from harness import IN_CI

from chromium import CHROMIUM_ARGS


HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.browser)


def _unavailable(reason: str):
    if IN_CI:
        pytest.fail(f"browser tests cannot run under CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def browser():
    executable = os.environ.get("REPLAY_CHROMIUM") or shutil.which("chromium")
    if not executable or not os.access(executable, os.X_OK):
        _unavailable("no Chromium: install Debian's chromium or set REPLAY_CHROMIUM")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context()
    page = context.new_page()
    yield page
    context.close()
