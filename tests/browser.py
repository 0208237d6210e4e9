"""Headless Chromium driven over its DevTools protocol, for the browser tests and the screenshot.

Debian's ``chromium`` speaks the DevTools protocol on a WebSocket of its own,
so the same small wsproto client that tests the server drives it: no WebDriver
binary, no Selenium, nothing downloaded. Each ``Tab`` is a page of one browser;
keys go in as real key events (``Input.dispatchKeyEvent``), and every wait is
for a state of the page's DOM, polled, with a deadline and what the page said.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from tests.wsclient import WsClient

INSTALL_HINT = "install it with `apt-get install -y chromium` (Debian)"
TIMEOUT = 10.0


def chromium_path() -> str | None:
    """Debian's ``chromium`` (or another Chromium or Chrome on PATH)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


def require_chromium() -> str:
    """The browser's path; if missing, fail on CI (``CI=true``), else skip saying how to
    install it."""
    path = chromium_path()
    if path is not None:
        return path
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"chromium not found but CI=true: {INSTALL_HINT}", pytrace=False)
    pytest.skip(f"chromium not found: {INSTALL_HINT}")


class Chromium:
    """One headless browser in a throwaway profile; ``tab`` opens a page."""

    def __init__(self, binary: str) -> None:
        self.profile = tempfile.mkdtemp(prefix="chromium-")
        args = [
            binary, "--headless=new", "--remote-debugging-port=0",
            "--remote-debugging-address=127.0.0.1",
            f"--user-data-dir={self.profile}", "--no-first-run", "--no-default-browser-check",
            "--disable-gpu", "--disable-extensions", "--disable-background-networking",
            "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
            "--disable-backgrounding-occluded-windows", "--hide-scrollbars", "about:blank",
        ]  # fmt: skip
        if os.geteuid() == 0:  # Chromium refuses to run as root with its sandbox on
            args.insert(1, "--no-sandbox")
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.ids = itertools.count(1)
        try:
            host, port, path = self._devtools_address()
            self.link = WsClient(host, port, path=path)
        except BaseException:
            self.close()
            raise

    def _devtools_address(self) -> tuple[str, int, str]:
        """Read stderr up to ``DevTools listening on ws://HOST:PORT/PATH``."""
        assert self.proc.stderr is not None
        deadline = time.monotonic() + TIMEOUT
        text = b""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stderr], [], [], deadline - time.monotonic())
            if not ready:
                break
            chunk = os.read(self.proc.stderr.fileno(), 4096)
            if not chunk:
                break
            text += chunk
            found = re.search(rb"DevTools listening on ws://([\d.]+):(\d+)(/\S+)", text)
            if found:
                return found[1].decode(), int(found[2]), found[3].decode()
        raise AssertionError(f"chromium did not start: {text.decode(errors='replace')[-2000:]}")

    def call(self, method: str, params: dict[str, Any] | None = None, session: str = "") -> Any:
        """One DevTools command and its result (events in between are not needed)."""
        ident = next(self.ids)
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self.link.send(json.dumps(message))
        while True:
            reply = json.loads(self.link.line(TIMEOUT))
            if reply.get("id") == ident:
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def tab(self, url: str, width: int = 720, height: int = 640) -> Tab:
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})
        tab = Tab(self, session["sessionId"])
        size = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
        tab.call("Emulation.setDeviceMetricsOverride", size)
        tab.call("Page.navigate", {"url": url})
        return tab

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        link = getattr(self, "link", None)
        if link is not None:
            link.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: The keys the tests press, as ``Input.dispatchKeyEvent`` wants them.
KEYS = {"Enter": (13, "\r"), "Tab": (9, "")}


class Tab:
    """One page of the browser."""

    def __init__(self, browser: Chromium, session: str) -> None:
        self.browser = browser
        self.session = session

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        return self.browser.call(method, params, self.session)

    def js(self, expression: str) -> Any:
        """The value of ``expression`` in the page."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait(self, expression: str, timeout: float = TIMEOUT) -> Any:
        """Poll until ``expression`` is truthy in the page (one that throws is not, as on a
        page still loading); fail with what the page shows."""
        deadline = time.monotonic() + timeout
        guarded = f"(() => {{ try {{ return ({expression}); }} catch (e) {{ return false; }} }})()"
        while True:
            value = self.js(guarded)
            if value:
                return value
            if time.monotonic() > deadline:
                shown = self.js("document.body ? document.body.innerText : ''")
                raise AssertionError(f"page never had {expression}; it shows:\n{shown}")
            time.sleep(0.05)  # DOM state is polled: the page has no way to call us

    def focus(self, selector: str) -> None:
        self.js(f"document.querySelector({json.dumps(selector)}).focus()")

    def press(self, key: str) -> None:
        code, text = KEYS[key]
        for kind in ("keyDown", "keyUp"):
            params = {"type": kind, "key": key, "code": key, "windowsVirtualKeyCode": code}
            if kind == "keyDown" and text:
                params["text"] = text
            self.call("Input.dispatchKeyEvent", params)

    def type(self, text: str) -> None:
        """Type ``text`` into the focused control."""
        self.call("Input.insertText", {"text": text})

    def focused(self) -> str:
        return str(self.js("document.activeElement ? document.activeElement.id : ''"))

    def screenshot(self, path: Path) -> None:
        self.call("Page.bringToFront")  # only the tab in front is painted
        shot = self.call("Page.captureScreenshot", {"format": "png"})
        path.write_bytes(base64.b64decode(shot["data"]))
