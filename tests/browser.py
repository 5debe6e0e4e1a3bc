"""Which Chromium the browser tests and the page benchmarks drive, found in one place.

In order: $STARLING_CHROMIUM; the first of `NAMES` on PATH (a snap's is passed over: snap confinement keeps it from
Playwright's profile folder in /tmp); Playwright's own build, once `python -m playwright install chromium` has
downloaded it. `python tests/browser.py` says which (tests/run.sh installs one where there is none, then says it).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--disable-dev-shm-usage"]


def installed_chromium() -> str | None:
    """The path of the Chromium to drive, or None for Playwright's own build (see the module's docstring)."""
    if os.environ.get("STARLING_CHROMIUM"):
        return os.environ["STARLING_CHROMIUM"]
    for name in NAMES:
        path = shutil.which(name)
        if path and not os.path.realpath(path).startswith("/snap/"):
            return path
    return None


def playwright_chromium() -> str:
    """Where Playwright's own Chromium is (or would be, once installed)."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        return playwright.chromium.executable_path


def describe() -> str:
    """One line: the browser the tests use, and its version."""
    path = installed_chromium()
    source = "from $STARLING_CHROMIUM" if os.environ.get("STARLING_CHROMIUM") else "on PATH"
    if path is None:
        path, source = playwright_chromium(), "Playwright's own build"
    try:
        version = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    except OSError:
        fix = "set it to a Chromium" if os.environ.get("STARLING_CHROMIUM") else "run `python -m playwright install chromium`"
        return f"{path} ({source}): not there; {fix}"
    return f"{version or 'Chromium'} at {path} ({source})"


def launch(playwright, **options):
    """Launch the Chromium found here with `ARGS`, headless, through a `sync_playwright()` instance."""
    return playwright.chromium.launch(executable_path=installed_chromium(), args=ARGS, **options)


if __name__ == "__main__":  # one line saying which browser; the status says whether there is one
    path = installed_chromium() or playwright_chromium()
    print(f"browser tests drive: {describe()}")
    sys.exit(0 if os.access(path, os.X_OK) else 1)
