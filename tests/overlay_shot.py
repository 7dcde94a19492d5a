"""Take docs/overlay.png: the overlay, while a chat line plays, over a checkerboard (the page's
background is transparent, as OBS composites it). ``python -m tests.overlay_shot [OUT.png]``."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from tests.overlay_support import Gateway, chromium, wait_js
from tests.support import REPO, running_daemon

CHECKER = """<!doctype html><html><body style="margin:0;height:100vh;overflow:hidden;
background: repeating-conic-gradient(#b9b9b9 0 25%, #7d7d7d 0 50%) 0 0 / 40px 40px">
<iframe src="{url}" style="display:block;border:0;width:100%;height:100%;background:transparent"
 allowtransparency="true" allow="autoplay"></iframe></body></html>"""


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "docs" / "overlay.png"
    with running_daemon({"audio": {"sinks": ["pcm"], "pace": "on"}}) as d:
        gw = Gateway(d)
        gw.start()
        driver = chromium()
        try:
            wrapper = Path(tempfile.mkdtemp()) / "checker.html"
            wrapper.write_text(CHECKER.format(url=gw.overlay_url(font_size="40", position="bottom")))
            driver.get(wrapper.as_uri())
            driver.switch_to.frame(0)
            wait_js(driver, "window.__overlay && window.__overlay.connected")
            bot = d.bot()
            text = "Thanks for the raid, everyone! Welcome to the stream <3"
            bot.send_multipart([b"chat", json.dumps({"text": text, "user": "PixelPanda"}).encode()])
            wait_js(driver, "document.querySelector('.caption')", 30)
            wait_js(
                driver, "getComputedStyle(document.querySelector('.caption')).opacity === '1'", 5
            )  # faded in
            driver.switch_to.default_content()
            driver.save_screenshot(str(out))
            print(out)
        finally:
            driver.quit()
            gw.stop()


if __name__ == "__main__":
    main()
