"""A real headless Chromium (Debian's /usr/bin/chromium) driven by Playwright, for the dashboard tests.

Playwright's own browser download is never used: the tests launch the system Chromium that .ci/run
installs, with the switches that keep it from reaching the network on its own.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM = os.environ.get("SPECTRA_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@contextmanager
def chromium() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        raise FileNotFoundError(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium; "
                                ".ci/run does) or point SPECTRA_TEST_CHROMIUM at a Chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class Screenshots:
    """Full-page screenshots into a folder of the test run and, when SPECTRA_SCREENSHOT_DIR is set, there too."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        extra = os.environ.get("SPECTRA_SCREENSHOT_DIR")
        self.extra = Path(extra) if extra else None

    def take(self, page: Page, name: str) -> Path:
        path = self.folder / f"{re.sub(r'[^A-Za-z0-9_-]', '_', name)}.png"
        page.screenshot(path=str(path), full_page=True)
        if self.extra is not None:
            self.extra.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, self.extra / path.name)
        return path
