"""Headless Chromium (Debian's chromium + chromium-driver) driven by Selenium 4, for the web pages."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from waits import wait_until

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

needs_chromium = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
    reason="chromium and chromium-driver are not installed (install.sh --dev installs them as root)",
)


def chrome(extra: Sequence[str] = (), size: str = "1200,1400") -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    o = webdriver.ChromeOptions()
    o.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--autoplay-policy=no-user-gesture-required", f"--window-size={size}", *extra):  # fmt: skip
        o.add_argument(a)
    o.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=o)


def wait(
    cond: Callable[[], Any], timeout_s: float = 20.0, what: str = "condition", driver: Any = None
) -> Any:
    """Poll ``cond`` until it returns something truthy (exceptions count as not yet)."""
    last: list[BaseException | None] = [None]

    def tolerant() -> Any:
        try:
            return cond()
        except Exception as e:  # stale elements while the page re-renders
            last[0] = e
            return None

    def detail() -> str:
        logs = ""
        if driver is not None:
            try:
                logs = "\n".join(str(x) for x in driver.get_log("browser")[-10:])
            except Exception:
                pass
        return f"({last[0]!r})\n{logs}"

    return wait_until(tolerant, timeout_s, what, detail, 0.1)


def login(driver: Any, url: str, token: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(url)
    app, box = driver.find_element(By.ID, "app"), driver.find_element(By.ID, "token")
    wait(lambda: app.is_displayed() or box.is_displayed(), what="the app or the login form", driver=driver)
    if app.is_displayed():  # still logged in (the token is in this tab's session storage)
        return
    box.clear()
    box.send_keys(token)
    driver.find_element(By.ID, "login").click()
    wait(lambda: driver.find_element(By.ID, "app").is_displayed(), what="the app after login", driver=driver)


def screenshot(driver: Any, name: str) -> None:
    """Keep a screenshot when ``ISHOWTTS_SCREENSHOTS`` names a directory (docs/ images come from here)."""
    d = os.environ.get("ISHOWTTS_SCREENSHOTS")
    if d:
        Path(d).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(d) / name))


__all__ = ["chrome", "login", "needs_chromium", "screenshot", "shutil", "wait"]
