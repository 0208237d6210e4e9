"""The page in a real browser: Debian's Chromium, headless, driven over DevTools.

Two pages pair, chat both ways and say goodbye, with the keyboard alone; a
third chats with a TCP client; every page comes back after an outage.
Skipped without Chromium, except under ``CI=true``, where that fails.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.browser import Chromium, Tab, require_chromium
from tests.integration.harness import Server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def me(tab: Tab, cid: int) -> None:
    tab.wait(f"document.getElementById('me').textContent === 'client {cid}'")


def said(tab: Tab, kind: str, text: str) -> str:
    """An expression: the chat log has an entry of ``kind`` ending in ``text``."""
    return (
        f"[...document.querySelectorAll('#log li.{kind}')]"
        f".some(li => li.textContent.endsWith({json.dumps(text)}))"
    )


def chat_with(tab: Tab, cid: int) -> None:
    """Refresh the list and pick ``cid``'s Chat button, by keyboard."""
    tab.focus("#refresh")
    tab.press("Enter")
    button = f"#clients button[data-id='{cid}']"
    tab.wait(f"document.querySelector({json.dumps(button)}) !== null")
    tab.focus(button)
    # the list is drawn anew at every refresh (every 5 s): the focus stays on the button
    tab.js("showClients(shown)")
    assert tab.js(f"document.activeElement === document.querySelector({json.dumps(button)})")
    tab.press("Enter")


def chatting(tab: Tab) -> None:
    tab.wait("!document.getElementById('message').disabled")
    assert tab.focused() == "message"  # the page puts the cursor where the typing goes


def say(tab: Tab, text: str) -> None:
    tab.focus("#message")
    tab.type(text)
    tab.press("Enter")


@pytest.fixture(scope="module")
def chromium() -> str:
    return require_chromium()


def test_two_pages_pair_chat_and_part_and_a_third_chats_with_tcp(
    start_server: Callable[..., Server], chromium: str
) -> None:
    server = start_server("--ws-port", "0")
    url = f"http://127.0.0.1:{server.ws_port}/"
    with Chromium(chromium) as browser:
        one = browser.tab(url)
        me(one, 1)
        two = browser.tab(url)
        me(two, 2)
        chat_with(one, 2)
        chatting(one)
        chatting(two)
        say(one, "hello from one")
        two.wait(said(two, "partner", "hello from one"))
        one.wait(said(one, "you", "hello from one"))
        say(two, "<b>hi</b> & welcome")  # text stays text
        one.wait(said(one, "partner", "<b>hi</b> & welcome"))
        assert one.js("document.querySelector('#log b') === null")
        # goodbye by keyboard: from the message field, Tab to Send, Tab to Say goodbye
        two.focus("#message")
        two.press("Tab")
        two.press("Tab")
        assert two.focused() == "goodbye"
        two.press("Enter")
        for tab, partner in ((one, 2), (two, 1)):
            tab.wait(said(tab, "system", f"The chat with client {partner} is over."))
            tab.wait("document.getElementById('message').disabled")

        one.js("send('CONNECT 1')")  # every ERROR is a sentence
        one.wait("document.getElementById('notice').textContent === "
                 "'That is you: pick another client.'")  # fmt: skip

        tcp = server.client()
        assert tcp.id == 3
        three = browser.tab(url)
        me(three, 4)
        chat_with(three, 3)
        tcp.expect("CONNECTED 4")
        chatting(three)
        say(three, "hello, TCP")
        tcp.expect("MSG hello, TCP")
        tcp.send("hello, browser")
        three.wait(said(three, "partner", "hello, browser"))
        tcp.send("#CLOSE#")
        tcp.expect("BYE")
        three.wait(said(three, "system", "The chat with client 3 is over."))

        # an outage: every page says so, and is back once a server is
        port = server.ws_port
        server.stop()
        for tab in (one, two, three):
            tab.wait("document.getElementById('notice').textContent"
                     ".startsWith('Lost the connection to the server')")  # fmt: skip
        start_server("--ws-port", str(port))
        for tab in (one, two, three):
            tab.wait("document.getElementById('notice').textContent"
                     ".startsWith('Reconnected: you are client')", timeout=20)  # fmt: skip


def test_names_and_random_matching_appear_when_the_server_has_them(
    start_server: Callable[..., Server], chromium: str
) -> None:
    """The page shows MATCH and NAME because HELP lists them; by keyboard again."""
    server = start_server("--ws-port", "0")
    url = f"http://127.0.0.1:{server.ws_port}/"
    with Chromium(chromium) as browser:
        one = browser.tab(url)
        me(one, 1)
        two = browser.tab(url)
        me(two, 2)
        for tab in (one, two):
            tab.wait("!document.getElementById('match').hidden"
                     " && !document.getElementById('name-form').hidden")  # fmt: skip
        one.focus("#name")
        one.type("ann")
        one.press("Enter")
        one.wait("document.getElementById('me').textContent === 'client 1 (ann)'")
        two.focus("#refresh")
        two.press("Enter")
        two.wait("document.getElementById('clients').textContent.includes('client 1 (ann)')")
        one.focus("#match")
        one.press("Enter")
        one.wait("document.getElementById('notice').textContent"
                 " === 'Waiting for a random partner...'")  # fmt: skip
        assert one.js("!document.getElementById('cancel').hidden"
                      " && document.getElementById('match').hidden")  # fmt: skip
        two.focus("#match")
        two.press("Enter")
        chatting(one)
        chatting(two)
        for tab in (one, two):  # in a chat a NAME or MATCH would be a line to the partner
            assert tab.js("['match', 'cancel', 'name-form']"
                          ".every(id => document.getElementById(id).hidden)")  # fmt: skip
        two.wait(said(two, "system", "You are chatting with client 1 (ann)."))
        say(two, "matched at random")
        one.wait(said(one, "partner", "matched at random"))
