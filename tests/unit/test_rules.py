"""The rule checker on hand-made transcripts: legal races pass, each broken rule is named.

This is how we know the stress test can fail: every rule it relies on is
broken here on purpose, once, and must be reported under its own name.
"""

from __future__ import annotations

from dataclasses import replace

from scripts.rules import (
    Event,
    Transcript,
    check,
    clients_ok,
    free_action,
    message,
    parse_message,
    well_formed,
)

WELCOME_SEQ = iter(range(1, 1_000_000))


def conn(
    uid: int,
    cid: int,
    *script: str,
    closed: bool = True,
    born: int = 0,
    severed: bool = False,
    tail: str = "",
) -> Transcript:
    """``> line`` sent, ``< line`` received, ``shut`` the sending side closed.

    ``> m`` sends the next attributable chat line (``message(uid, k, seq)``), so
    scripts stay short; what a partner receives is written out with ``m()``.
    """
    events: list[Event] = [("recv", f"WELCOME {cid}")]
    sent = connected = 0
    for item in script:
        if item == "shut":
            events.append(("shut", ""))
        elif item.startswith("> "):
            line = item[2:]
            if line == "m":
                line = message(uid, connected, sent)
            events.append(("sent", line))
            sent += 1
        else:
            assert item.startswith("< "), item
            events.append(("recv", item[2:]))
            connected += item.startswith("< CONNECTED ")
    return Transcript(uid, cid, born or uid, tuple(events), closed, tail, severed)


def m(uid: int, k: int, seq: int) -> str:
    return "< MSG " + message(uid, k, seq)


def rules(*transcripts: Transcript) -> list[str]:
    return sorted({v.rule for v in check(transcripts).violations})


def assert_legal(*transcripts: Transcript) -> None:
    report = check(transcripts)
    assert report.violations == [], "\n".join(map(str, report.violations))


# ---- a base story, and the same story broken in one place ------------------------------


def chat(
    a_got: list[str] | None = None, b_sends: int = 2, b_end: str = "> #GOODBYE#"
) -> tuple[Transcript, Transcript]:
    """1 asks 2; each sends lines; 2 ends the session; both close."""
    a_got = a_got if a_got is not None else [m(2, 1, 0), m(2, 1, 1)]
    a = conn(
        1, 1,
        "> CONNECT 2", "< CONNECTED 2", "> m", "> m",
        *a_got, "< ENDED 2", "> #CLOSE#", "< BYE",
    )  # fmt: skip
    b = conn(
        2, 2,
        "< CONNECTED 1", *["> m"] * b_sends, m(1, 1, 1), m(1, 1, 2),
        b_end, "< ENDED 1" if b_end == "> #GOODBYE#" else "< BYE",
        *(["> #CLOSE#", "< BYE"] if b_end == "> #GOODBYE#" else []),
    )  # fmt: skip
    return a, b


def test_the_base_story_is_legal():
    assert_legal(*chat())
    report = check(chat())
    assert (report.sessions, report.messages, report.connections) == (1, 4, 2)


def test_a_msg_from_a_non_partner():
    a, b = chat(a_got=[m(2, 1, 0), m(3, 0, 0), m(2, 1, 1)])
    c = conn(3, 3, "> m", "< ERROR UNKNOWN_COMMAND m", "> #CLOSE#", "< BYE")
    assert rules(a, b, c) == ["foreign"]


def test_a_forged_line_that_the_partner_never_sent():
    a, b = chat(a_got=[m(2, 1, 0), m(2, 1, 7), m(2, 1, 1)])
    assert rules(a, b) == ["foreign"]


def test_out_of_order_lines():
    assert rules(*chat(a_got=[m(2, 1, 1), m(2, 1, 0)])) == ["order"]


def test_a_gap():
    assert rules(*chat(a_got=[m(2, 1, 0), m(2, 1, 2)], b_sends=3)) == ["gap"]


def test_a_line_lost_before_the_senders_goodbye():
    """2 ended the session while 1 stayed: everything 2 sent before must arrive."""
    assert rules(*chat(a_got=[m(2, 1, 0)])) == ["lost"]


def test_a_line_lost_before_the_senders_close():
    assert rules(*chat(a_got=[m(2, 1, 0)], b_end="> #CLOSE#")) == ["lost"]


def test_a_line_dropped_because_the_receiver_ended_first_is_legal():
    """Lines in flight when the receiver ends the session may be cut, from the end."""
    a = conn(
        1, 1,
        "> CONNECT 2", "< CONNECTED 2", m(2, 1, 0), "> #GOODBYE#", "< ENDED 2",
        "> #CLOSE#", "< BYE",
    )  # fmt: skip
    b = conn(
        2, 2,
        "< CONNECTED 1", "> m", "> m", "> m", "< ENDED 1",
        "< ERROR UNKNOWN_COMMAND m", "> #CLOSE#", "< BYE",
    )  # fmt: skip
    assert_legal(a, b)
    # but only a suffix: the first line missing and the second there is a gap
    a2 = conn(
        1, 1,
        "> CONNECT 2", "< CONNECTED 2", m(2, 1, 1), "> #GOODBYE#", "< ENDED 2",
        "> #CLOSE#", "< BYE",
    )  # fmt: skip
    assert rules(a2, b) == ["delivery"]


def test_a_line_sent_after_the_goodbye_crosses_the_boundary():
    a = conn(
        1, 1,
        "> CONNECT 2", "< CONNECTED 2", m(2, 1, 0), m(2, 1, 2), "< ENDED 2",
        "> #CLOSE#", "< BYE",
    )  # fmt: skip
    b = conn(2, 2, "< CONNECTED 1", "> m", "> #GOODBYE#", "> m", "< ENDED 1",
             "< ERROR UNKNOWN_COMMAND m", "> #CLOSE#", "< BYE")  # fmt: skip
    assert "cross-session" in rules(a, b)


def test_an_old_line_delivered_into_a_later_session():
    """2's line was handled in session 1 (its PONG proves it), yet arrives in session 2.

    Both halves are named: the line is missing from session 1, which 2 ended
    while 1 stayed, and it is not among what 2 had relayed in session 2.
    """
    a = conn(
        1, 1,
        "> CONNECT 2", "< CONNECTED 2", "< ENDED 2",
        "> CONNECT 2", "< CONNECTED 2", m(2, 1, 0), "> #GOODBYE#", "< ENDED 2",
        "> #CLOSE#", "< BYE",
    )  # fmt: skip
    b = conn(
        2, 2,
        "< CONNECTED 1", "> m", "> #GOODBYE#", "> PING", "< ENDED 1", "< PONG",
        "< CONNECTED 1", "< ENDED 1", "> #CLOSE#", "< BYE",
    )  # fmt: skip
    assert rules(a, b) == ["delivery", "lost"]
    # the same line delivered in session 1, as it must be, is legal
    a_ok = conn(
        1, 1,
        "> CONNECT 2", "< CONNECTED 2", m(2, 1, 0), "< ENDED 2",
        "> CONNECT 2", "< CONNECTED 2", "> #GOODBYE#", "< ENDED 2",
        "> #CLOSE#", "< BYE",
    )  # fmt: skip
    assert_legal(a_ok, b)


def test_asymmetric_connected():
    a = conn(1, 1, "> CONNECT 2", "< CONNECTED 2", "> #CLOSE#", "< BYE")
    b = conn(2, 2, "> #CLOSE#", "< BYE")
    assert rules(a, b) == ["asymmetric"]


def test_a_second_session_before_the_first_ended():
    a = conn(
        1, 1,
        "> CONNECT 2", "< CONNECTED 2", "< CONNECTED 3", "> #CLOSE#", "< BYE",
    )  # fmt: skip
    b = conn(2, 2, "< CONNECTED 1", "< ENDED 1", "> #CLOSE#", "< BYE")
    c = conn(3, 3, "> CONNECT 1", "< CONNECTED 1", "< ENDED 1", "> #CLOSE#", "< BYE")
    assert "double-session" in rules(a, b, c)


def test_ended_for_someone_else():
    a = conn(1, 1, "> CONNECT 2", "< CONNECTED 2", "< ENDED 3", "> #CLOSE#", "< BYE")
    b = conn(2, 2, "< CONNECTED 1", "< ENDED 1", "> #CLOSE#", "< BYE")
    assert "unmatched-ended" in rules(a, b)


def test_both_ends_told_the_other_ended():
    a = conn(1, 1, "> CONNECT 2", "< CONNECTED 2", "< ENDED 2", "> #CLOSE#", "< BYE")
    b = conn(2, 2, "< CONNECTED 1", "< ENDED 1", "> #CLOSE#", "< BYE")
    assert rules(a, b) == ["unmatched-ended"]


def test_ended_twice():
    a = conn(
        1, 1,
        "> CONNECT 2", "< CONNECTED 2", "> #GOODBYE#", "< ENDED 2", "< ENDED 2",
        "> #CLOSE#", "< BYE",
    )  # fmt: skip
    b = conn(2, 2, "< CONNECTED 1", "< ENDED 1", "> #CLOSE#", "< BYE")
    assert rules(a, b) == ["unmatched-ended"]


def test_both_ends_asked():
    """Neither CONNECT can have been relayed: the line after it arrived first."""
    a = conn(1, 1, "> CONNECT 2", "> m", "< CONNECTED 2", "< ENDED 2", "> #CLOSE#", "< BYE")
    b = conn(
        2, 2, "> CONNECT 1", "< CONNECTED 1", "< MSG " + message(1, 0, 1), "> #GOODBYE#",
        "< ENDED 1", "> #CLOSE#", "< BYE",
    )  # fmt: skip
    assert rules(a, b) == ["session-start"]
    # a's CONNECT relayed and lost in flight would be legal, had b not received the line after it
    b2 = conn(
        2, 2, "> CONNECT 1", "< CONNECTED 1", "> #GOODBYE#", "< ENDED 1", "> #CLOSE#", "< BYE"
    )
    a2 = conn(1, 1, "> CONNECT 2", "< CONNECTED 2", "< ENDED 2", "> #CLOSE#", "< BYE")
    assert_legal(a2, b2)


def test_a_reply_out_of_order():
    a = conn(1, 1, "> PING", "> GET", "< CLIENTS 1=FREE", "< PONG", "> #CLOSE#", "< BYE")
    assert rules(a) == ["reply"]


def test_clients_must_show_the_askers_own_status():
    a = conn(1, 1, "> GET", "< CLIENTS 1=BUSY", "> #CLOSE#", "< BYE")
    assert rules(a) == ["reply"]


def test_a_connection_closed_without_bye():
    assert rules(conn(1, 1, "> #CLOSE#")) == ["unanswered"]


def test_a_connection_the_server_never_closed():
    assert rules(conn(1, 1, "> #CLOSE#", closed=False)) == ["unfinished"]


# ---- legal races -------------------------------------------------------------------------


def test_crossed_connects_one_refused():
    a = conn(1, 1, "> CONNECT 2", "< CONNECTED 2", "> #GOODBYE#", "< ENDED 2", "> #CLOSE#", "< BYE")
    b = conn(
        2, 2, "> CONNECT 1", "< CONNECTED 1", "< ERROR TALKING 1", "< ENDED 1", "> #CLOSE#", "< BYE"
    )
    assert_legal(a, b)


def test_crossed_connects_one_relayed_as_a_message():
    """2 was paired before its worker read its CONNECT: the line goes to 1 as a message."""
    a = conn(
        1, 1,
        "> CONNECT 2", "< CONNECTED 2", "< MSG CONNECT 1", "> #GOODBYE#", "< ENDED 2",
        "> #CLOSE#", "< BYE",
    )  # fmt: skip
    b = conn(2, 2, "> CONNECT 1", "< CONNECTED 1", "< ENDED 1", "> #CLOSE#", "< BYE")
    assert_legal(a, b)


def test_commands_sent_before_connected_arrived_are_relayed():
    a = conn(
        1, 1, "> CONNECT 2", "< CONNECTED 2", "< MSG GET", "< MSG PING", "> #GOODBYE#", "< ENDED 2",
        "> #CLOSE#", "< BYE",
    )  # fmt: skip
    b = conn(2, 2, "> GET", "> PING", "< CONNECTED 1", "< ENDED 1", "> #CLOSE#", "< BYE")
    assert_legal(a, b)
    # had the server answered the GET, it could not also have relayed it
    b2 = conn(
        2, 2, "> GET", "> PING", "< CLIENTS 1=FREE 2=FREE", "< CONNECTED 1", "< ENDED 1",
        "> #CLOSE#", "< BYE",
    )  # fmt: skip
    assert rules(a, b2) == ["delivery"]


def test_lines_sent_right_after_connect_are_messages():
    a = conn(
        1, 1, "> CONNECT 2", "> m", "> m", "< CONNECTED 2", "> #GOODBYE#", "< ENDED 2",
        "> #CLOSE#", "< BYE",
    )  # fmt: skip
    b = conn(
        2, 2, "< CONNECTED 1", "< MSG " + message(1, 0, 1), "< MSG " + message(1, 0, 2),
        "< ENDED 1", "> #CLOSE#", "< BYE",
    )  # fmt: skip
    assert_legal(a, b)


def test_a_message_after_the_partner_left_is_refused():
    a = conn(1, 1, "> CONNECT 2", "< CONNECTED 2", "> #GOODBYE#", "< ENDED 2", "> #CLOSE#", "< BYE")
    b = conn(
        2, 2, "< CONNECTED 1", "< ENDED 1", "> m", "> #GOODBYE#",
        "< ERROR UNKNOWN_COMMAND m", "< ERROR NOT_IN_CHAT", "> #CLOSE#", "< BYE",
    )  # fmt: skip
    assert_legal(a, b)


def test_both_say_goodbye_at_once():
    a = conn(
        1, 1, "> CONNECT 2", "< CONNECTED 2", "> m", "> #GOODBYE#", "< ENDED 2",
        "> #CLOSE#", "< BYE",
    )  # fmt: skip
    b = conn(2, 2, "< CONNECTED 1", "> #GOODBYE#", "< ENDED 1", "> #CLOSE#", "< BYE")
    assert_legal(a, b)


def test_paired_again_before_a_stale_goodbye_is_answered():
    """2 ended first; 3 paired with 1 before 1's goodbye (now stale) got its ENDED."""
    a = conn(
        1, 1, "> CONNECT 2", "< CONNECTED 2", "> #GOODBYE#", "< CONNECTED 3", "< ENDED 2",
        "< ENDED 3", "> #CLOSE#", "< BYE",
    )  # fmt: skip
    b = conn(2, 2, "< CONNECTED 1", "> #GOODBYE#", "< ENDED 1", "> #CLOSE#", "< BYE")
    c = conn(3, 3, "> CONNECT 1", "< CONNECTED 1", "> #GOODBYE#", "< ENDED 1", "> #CLOSE#", "< BYE")
    assert_legal(a, b, c)
    # had 1's goodbye ended the session, nobody could have paired with 1 before its answer
    b2 = conn(2, 2, "< CONNECTED 1", "< ENDED 1", "> #CLOSE#", "< BYE")
    assert rules(a, b2, c) == ["ended-late"]


def test_paired_after_close_before_bye():
    a = conn(1, 1, "> #CLOSE#", "< CONNECTED 2", "< BYE")
    b = conn(2, 2, "> CONNECT 1", "< CONNECTED 1", "< ENDED 1", "> #CLOSE#", "< BYE")
    assert_legal(a, b)


def test_shut_counts_as_close_and_its_lines_still_go_out():
    a = conn(1, 1, "> CONNECT 2", "< CONNECTED 2", m(2, 1, 0), "< ENDED 2", "> #CLOSE#", "< BYE")
    b = conn(2, 2, "< CONNECTED 1", "> m", "shut", "< BYE")
    assert_legal(a, b)
    a_lost = conn(1, 1, "> CONNECT 2", "< CONNECTED 2", "< ENDED 2", "> #CLOSE#", "< BYE")
    assert rules(a_lost, b) == ["lost"]


def test_reused_ids_pair_in_order():
    """Id 2 is held twice; each holder's session with 1 matches the right one."""
    a = conn(
        1, 1,
        "> CONNECT 2", "< CONNECTED 2", m(2, 1, 0), "< ENDED 2",
        "> CONNECT 2", "< CONNECTED 2", m(3, 1, 0), "< ENDED 2", "> #CLOSE#", "< BYE",
    )  # fmt: skip
    b1 = conn(2, 2, "< CONNECTED 1", "> m", "> #CLOSE#", "< BYE", born=2)
    b2 = conn(3, 2, "< CONNECTED 1", "> m", "> #CLOSE#", "< BYE", born=3)
    assert_legal(a, b1, b2)
    swapped = conn(
        1, 1,
        "> CONNECT 2", "< CONNECTED 2", m(3, 1, 0), "< ENDED 2",
        "> CONNECT 2", "< CONNECTED 2", m(2, 1, 0), "< ENDED 2", "> #CLOSE#", "< BYE",
    )  # fmt: skip
    assert "foreign" in rules(swapped, b1, b2)


def test_a_cut_client():
    a = conn(1, 1, "> CONNECT 2", "< CONNECTED 2", "< ERROR SLOW_CONSUMER")
    b = conn(2, 2, "< CONNECTED 1", "< ENDED 1", "> #CLOSE#", "< BYE")
    assert_legal(a, b)
    assert check([a, b]).cut == 1


# ---- connections cut by a killed worker or acceptor (the soak's chaos) --------------------


def test_a_client_of_a_killed_worker_may_stop_anywhere():
    """1's worker died in a session with 2, on another worker: 1's transcript just stops, its
    GET unanswered; 2 gets ENDED 1 after only some of 1's lines (the rest died with it)."""
    a = conn(
        1, 1, "> CONNECT 2", "< CONNECTED 2", "> m", "> m", "> m", m(2, 1, 0), "> #GOODBYE#",
        severed=True,
    )  # fmt: skip
    b = conn(
        2, 2, "< CONNECTED 1", "> m", m(1, 1, 1), "< ENDED 1", "> m",
        "< ERROR UNKNOWN_COMMAND m", "> #CLOSE#", "< BYE",
    )  # fmt: skip
    assert_legal(a, b)
    assert check([a, b]).severed == 1
    # without the death, 1 was owed its ENDED and BYE, and 2 the lines 1 sent
    assert rules(replace(a, severed=False), b) == ["unanswered"]


def test_both_ends_of_a_session_on_a_killed_worker():
    a = conn(1, 1, "> CONNECT 2", "< CONNECTED 2", "> m", "> m", m(2, 1, 0), severed=True)
    b = conn(2, 2, "< CONNECTED 1", "> m", "> m", m(1, 1, 1), severed=True)
    assert_legal(a, b)


def test_a_killed_worker_before_welcome_or_connected():
    """Cut before its WELCOME (by the acceptor's or the worker's death), or before the
    CONNECTED its partner, on another worker, got."""
    assert_legal(Transcript(1, 0, 0, (), True, severed=True))
    assert rules(Transcript(1, 0, 0, (), True)) == ["welcome"]
    a = conn(1, 1, "> GET", severed=True)
    b = conn(2, 2, "> CONNECT 1", "< CONNECTED 1", "< ENDED 1", "> #CLOSE#", "< BYE")
    assert_legal(a, b)


def test_a_client_moving_when_its_worker_died_may_get_outage():
    """Freed with the dead worker while its socket was in flight, it lands to find its id
    given away: OUTAGE. That counts as the death's doing, not as a cut by the server."""
    a = conn(1, 1, "> CONNECT 2", "> GET", "< OUTAGE", severed=True)
    assert_legal(a)
    assert check([a]).cut == 0
    assert check([replace(a, severed=False)]).cut == 1


def test_a_line_cut_short_only_by_a_death():
    assert_legal(conn(1, 1, "> PING", "< PONG", severed=True, tail="CLIEN"))
    ended = conn(1, 1, "> PING", "< PONG", "> #CLOSE#", "< BYE", tail="CLIEN")
    assert rules(ended) == ["partial-line"]


def test_a_severed_client_keeps_every_other_rule():
    a = conn(1, 1, "> CONNECT 2", "< CONNECTED 2", "> m", "> m", "> m", severed=True)

    def partner(*got: str) -> Transcript:
        return conn(2, 2, "< CONNECTED 1", *got, "< ENDED 1", "> #CLOSE#", "< BYE")

    assert_legal(a, partner(m(1, 1, 1), m(1, 1, 2)))
    assert rules(a, partner(m(1, 1, 1), m(1, 1, 3))) == ["gap"]
    assert rules(a, partner(m(1, 1, 2), m(1, 1, 1))) == ["order"]
    assert rules(a, partner(m(1, 1, 1), m(1, 1, 1))) == ["order"]
    assert rules(a, partner(m(1, 1, 1), m(3, 0, 0))) == ["foreign"]
    assert rules(conn(1, 1, "> PING", "< CLIENTS 1=FREE", severed=True)) == ["reply"]


def test_a_goodbye_answered_before_the_death_owed_every_line():
    """1's ENDED says the session was over before its worker died: 2, who stayed, must have
    every line 1 sent before its goodbye. Had the death come first, lines may be missing."""
    b = conn(2, 2, "< CONNECTED 1", m(1, 1, 1), "< ENDED 1", "> #CLOSE#", "< BYE")
    answered = conn(
        1, 1, "> CONNECT 2", "< CONNECTED 2", "> m", "> m", "> #GOODBYE#", "< ENDED 2",
        severed=True,
    )  # fmt: skip
    # either 1's goodbye was answered and 2 lost a line, or 1's ENDED was 2's doing, which
    # 2's own ENDED denies: the checker names the second
    assert rules(answered, b) == ["unmatched-ended"]
    unanswered = conn(
        1, 1, "> CONNECT 2", "< CONNECTED 2", "> m", "> m", "> #GOODBYE#", severed=True
    )
    assert_legal(unanswered, b)


# ---- small pieces -------------------------------------------------------------------------


def test_message_round_trip():
    assert parse_message(message(4, 2, 9, "xx")) == (4, 2, 9)
    assert parse_message("hello there you all") is None


def test_free_action_follows_the_protocol_page():
    assert free_action("get free") == ("get", "FREE")
    assert free_action("CONNECT 007") == ("connect", "7")
    assert free_action("CONNECT 0") == ("usage", "")
    assert free_action("#GOODBYE#") == ("reply", "ERROR NOT_IN_CHAT")
    assert free_action("m 1 2 3") == ("reply", "ERROR UNKNOWN_COMMAND m")
    assert free_action("  ") == ("silent", "")


def test_clients_line_shape():
    assert clients_ok("CLIENTS 1=FREE 3=BUSY", 3, True, False)
    assert not clients_ok("CLIENTS 1=FREE 13=BUSY", 3, True, False)
    assert clients_ok("CLIENTS", 3, True, True)
    assert not clients_ok("CLIENTS 3=FREE", 3, True, True)
    assert not clients_ok("CLIENTS 2=BUSY 3=FREE", 3, False, True)
    assert well_formed("CLIENTS 1=FREE 3=BUSY") and well_formed("CLIENTS")
    assert not well_formed("CLIENTS 3=BUSY 1=FREE")
    assert not well_formed("CLIENTS 1=free")


def test_a_malformed_clients_line():
    assert rules(conn(1, 1, "> GET", "< CLIENTS 1=FREE 1=FREE", "> #CLOSE#", "< BYE")) == ["reply"]
