"""Signed-in dashboard pages in Debian's headless Chromium, driven by Playwright: one per
person, each in a browser context of its own (a phone-sized viewport is a touch phone)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.support.scripts import find_program

#: Overrides where Chromium is looked for (e.g. a build outside PATH).
CHROMIUM_ENV = "WARDEN_CHROMIUM"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]


def chromium_path() -> str:
    """Debian's Chromium, or $WARDEN_CHROMIUM; fails the test naming how to install it."""
    found = find_program(CHROMIUM_ENV, "chromium", "chromium-browser")
    if found is None or not found.exists():
        pytest.fail(
            f"chromium not found {'at ' + str(found) if found else 'on PATH'} (set {CHROMIUM_ENV} to its path); "
            "install it with `apt-get install chromium`, or scripts/install-system-packages.sh",
            pytrace=False,
        )
    return str(found)


PHONE = {"width": 390, "height": 844}


@contextmanager
def signed_in_pages(base_url: str) -> Iterator[Callable[[str, dict[str, int], str], Any]]:
    """open(secret, viewport, path) -> a page on `path`, signed in with `secret`. Fails the
    test on any JavaScript error any page raised."""
    playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[test]' installs playwright")
    errors: list[str] = []
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True)

        def open_page(secret: str, viewport: dict[str, int], path: str = "/") -> Any:
            mobile = viewport == PHONE
            context = chromium.new_context(viewport=viewport, is_mobile=mobile, has_touch=mobile, device_scale_factor=2 if mobile else 1)
            page = context.new_page()
            page.set_default_timeout(15_000)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(base_url + path)
            page.fill("#token", secret)
            page.click("#login button[type=submit]")
            return page

        try:
            yield open_page
            assert not errors, f"JavaScript errors on the page: {errors}"
        finally:
            chromium.close()
