"""Support for the overlay tests and benchmark: the gateway as a subprocess, and headless Chromium.

Both are the real things: the gateway serves the overlay routes from the package, Chromium
(Debian's, driven by Selenium 4 through Debian's chromedriver) runs the page and its AudioWorklet
in real time with no sound card.
"""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from tests.support import REPO

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
KEY = "overlay-test-key-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Gateway:
    """The overlay gateway process, restartable on the same port."""

    def __init__(self, pcm: str, log: Path, port: int | None = None, key: str = KEY) -> None:
        self.pcm = pcm
        self.port = port or free_port()
        self.key = key
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def overlay_url(self, **params: str) -> str:
        q = "&".join(f"{k}={v}" for k, v in {"key": self.key, **params}.items())
        return f"{self.base}/overlay?{q}"

    def start(self, timeout_s: float = 30.0) -> None:
        cmd = [sys.executable, "-m", "tests.overlay_gateway", "--pcm", self.pcm]
        cmd += ["--port", str(self.port), "--key", self.key]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{self.base}/overlay/static/overlay.css", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"gateway did not start; log:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def chromium() -> Any:
    """Headless Chromium with autoplay allowed (as OBS's browser source does)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--autoplay-policy=no-user-gesture-required",
        "--window-size=1280,720",
    ):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def wait_js(driver: Any, expr: str, timeout_s: float = 20.0, poll_s: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        v = driver.execute_script(f"return {expr}")
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {expr}; page log tail: {page_log(driver)[-10:]}")
        time.sleep(poll_s)


def page_log(driver: Any) -> list[dict[str, Any]]:
    return list(driver.execute_script("return window.__overlay ? window.__overlay.log : []"))


def take_capture(driver: Any) -> tuple[int, np.ndarray]:
    """What the page's AudioWorklet rendered since the last call: (first frame index, s16 samples)."""
    c = driver.execute_script("return window.__overlay.takeCapture()")
    pcm = np.frombuffer(base64.b64decode(c["b64"]), dtype="<i2")
    return int(c["start"] or 0), pcm
