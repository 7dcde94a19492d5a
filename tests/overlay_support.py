"""Support for the overlay tests and benchmark: the gateway as a subprocess, and headless Chromium.

Both are the real things: ``ishowtts-web`` serves the overlay from the package, Chromium
(Debian's, driven by Selenium 4 through Debian's chromedriver) runs the page and its AudioWorklet
in real time with no sound card.
"""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import urllib.request
from typing import Any

import numpy as np
import tomlkit

from tests.support import REPO, Daemon
from tests.waits import wait_until

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
KEY = "overlay-test-key-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Gateway:
    """The real ``ishowtts-web`` process next to a daemon, restartable on the same port, with the
    overlay key (and an API token) written beforehand."""

    def __init__(self, daemon: Daemon, port: int | None = None, key: str = KEY) -> None:
        self.port = port or free_port()
        self.key = key
        d = daemon.dir
        (d / "web").mkdir(exist_ok=True)
        for name, secret in (("overlay.key", key), ("token", "api-token-for-the-overlay-tests")):
            f = d / "web" / name
            f.write_text(secret + "\n")
            f.chmod(0o600)
        settings = {
            "daemon": {"state_dir": str(d / "state"), "log_level": "info"},
            "zmq": dict(daemon.settings["zmq"]),
            "web": {
                "listen": f"127.0.0.1:{self.port}",
                "token_file": str(d / "web" / "token"),
                "overlay_key_file": str(d / "web" / "overlay.key"),
            },
        }
        self.config = d / f"web-{self.port}.toml"
        self.config.write_text(tomlkit.dumps(settings))
        self.log = self.config.with_suffix(".log")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def overlay_url(self, **params: str) -> str:
        q = "&".join(f"{k}={v}" for k, v in {"key": self.key, **params}.items())
        return f"{self.base}/overlay?{q}"

    def start(self, timeout_s: float = 30.0) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ishowttsd.web.cli", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

        def serving() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"gateway exited; log:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.base}/overlay/static/overlay.css", timeout=1) as r:
                    return r.status == 200
            except OSError:
                return False

        wait_until(
            serving, timeout_s, "the gateway to serve", lambda: f"log:\n{self.log.read_text()[-3000:]}", 0.1
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
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
    return wait_until(
        lambda: driver.execute_script(f"return {expr}"),
        timeout_s,
        expr,
        lambda: f"page log tail: {page_log(driver)[-10:]}",
        poll_s,
    )


def page_log(driver: Any) -> list[dict[str, Any]]:
    return list(driver.execute_script("return window.__overlay ? window.__overlay.log : []"))


def take_capture(driver: Any) -> tuple[int, np.ndarray]:
    """What the page's AudioWorklet rendered since the last call: (first frame index, s16 samples)."""
    c = driver.execute_script("return window.__overlay.takeCapture()")
    pcm = np.frombuffer(base64.b64decode(c["b64"]), dtype="<i2")
    return int(c["start"] or 0), pcm
