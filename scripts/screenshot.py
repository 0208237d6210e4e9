"""Remake the README's pictures of the browser page: two pages in a session.

    python -m scripts.screenshot [--out docs]

Starts a server on free loopback ports, opens the page twice in headless
Chromium (Debian's ``chromium``, driven as the browser tests drive it), pairs
the two, exchanges a few lines, and saves each page as ``browser-1.png`` and
``browser-2.png``.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
from pathlib import Path

from tests.browser import Chromium, Tab, chromium_path

ROOT = Path(__file__).resolve().parents[1]

LINES = [  # (which page, what it says)
    (1, "Hi! Is this the chat about the Lisbon trip?"),
    (2, "It is. I land on Friday at 9:40."),
    (1, "Great, I will wait at arrivals."),
    (2, "See you there!"),
]


#: Each page's viewport: wide enough for the list and the chat side by side.
SIZE = (880, 560)


def start_server() -> tuple[subprocess.Popen[str], int]:
    cmd = [sys.executable, "-m", "matchmaker", "--host", "127.0.0.1", "--port", "0",
           "--ws-port", "0", "--workers", "2"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    port = 0
    for line in proc.stdout:
        if line.startswith("ws listening on "):
            port = int(line.rsplit(":", 1)[1])
        elif line.startswith("listening on "):
            return proc, port
    raise SystemExit("the server did not start")


def shown(tab: Tab, text: str) -> None:
    tab.wait(f"document.getElementById('log').textContent.includes({json.dumps(text)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="where the PNGs go")
    args = parser.parse_args()
    binary = chromium_path()
    if binary is None:
        raise SystemExit("chromium not found: apt-get install -y chromium")
    server, port = start_server()
    url = f"http://127.0.0.1:{port}/"
    try:
        with Chromium(binary) as browser:
            tabs = {}
            for cid in (1, 2):  # one after the other, so that each has the id its name says
                tabs[cid] = browser.tab(url, *SIZE)
                tabs[cid].wait(f"document.getElementById('me').textContent === 'client {cid}'")
            tabs[1].js("send('GET')")
            tabs[1].wait("document.querySelector(\"#clients button[data-id='2']\") !== null")
            tabs[1].js("document.querySelector(\"#clients button[data-id='2']\").click()")
            for tab in tabs.values():
                tab.wait("!document.getElementById('message').disabled")
            for cid, text in LINES:
                tabs[cid].js(f"document.getElementById('message').value = {json.dumps(text)}")
                tabs[cid].js("document.getElementById('send').click()")
                for tab in tabs.values():
                    shown(tab, text)
            for tab in tabs.values():
                tab.wait("document.querySelectorAll('#clients .state.BUSY').length === 2")
                tab.js("document.activeElement.blur(); window.scrollTo(0, 0)")
            args.out.mkdir(parents=True, exist_ok=True)
            for cid, tab in tabs.items():
                path = args.out / f"browser-{cid}.png"
                tab.screenshot(path)
                print(path)
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(10)


if __name__ == "__main__":
    main()
