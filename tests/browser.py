"""Debian's headless Chromium driven by Selenium through Debian's chromedriver.

No browser is downloaded: the driver's path is given, so Selenium Manager is never asked,
and Chromium runs with a fresh profile and without background traffic (updates, sync,
QUIC). The browser's console (CSP violations among its messages) is read through
chromedriver's logging preferences; phone screens and dark mode are emulated with the
DevTools protocol, the way Chromium's own device toolbar does it.
"""

from __future__ import annotations

import base64
import shutil
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars")
PHONE = {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True}


def chrome(profile: Path, width: int = 1280, height: int = 900) -> webdriver.Chrome:
    """A headless Chromium with a new profile in *profile*; quit() it."""
    for binary in (CHROMIUM, CHROMEDRIVER):
        if shutil.which(binary) is None:
            pytest.fail(f"{binary} is missing: apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=CHROMEDRIVER, log_output=str(profile) + ".driver.log")
    return webdriver.Chrome(options=options, service=service)


def console(driver: webdriver.Chrome) -> list[dict[str, Any]]:
    """The console messages since the last call (chromedriver hands each out once)."""
    return list(driver.get_log("browser"))


def csp_violations(messages: list[dict[str, Any]]) -> list[str]:
    return [m["message"] for m in messages if "Content Security Policy" in m["message"]]


def emulate(driver: webdriver.Chrome, *, phone: bool = False, dark: bool = False) -> None:
    """Screen and colour scheme from now on (both off: the window's own)."""
    if phone:
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", PHONE)
    else:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {
        "features": [{"name": "prefers-color-scheme", "value": "dark" if dark else "light"}]})


def screenshot(driver: webdriver.Chrome, path: Path) -> Path:
    """The whole page, not only the viewport, as a PNG at *path*."""
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))
    return path
