"""The benchmark's load generator: Python opens and pairs the clients, a small C loop drives them.

Why C: on a 2-core machine the server under test wants both cores, so every
microsecond the load generator spends per line is taken from the server. An
asyncio client costs about as much per line as an asyncio server, so a Python
load generator would halve what it measures, and halve it differently for fast
and slow servers. The hot loop (one epoll loop over every client socket,
preformatted lines, no allocation per line) is compiled from ``C_SOURCE`` with
gcc when the benchmark starts; its CPU time is measured and reported.

Python keeps the slow, careful part: it connects the clients one at a time,
reads each ``WELCOME``, finds out with psutil which server process holds each
connection (so pairs are same-worker or cross-worker by observation, not by
assumption), pairs them with ``CONNECT``, then hands the connected sockets to
the C helper (``pass_fds``) and reads its results. Every line carries a
sequence number and its send time (CLOCK_MONOTONIC, the clock behind
``time.perf_counter_ns``); the helper counts lost and out-of-order lines and
writes every latency sample to a file for the percentiles.
"""

from __future__ import annotations

import array
import hashlib
import math
import os
import resource
import select
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

#: Bytes per chat line, ``\n`` included (the server adds ``MSG `` in front).
LINE_BYTES = 64
#: Lines each stream sender keeps in flight.
STREAM_WINDOW = 64
#: Connections the conns workload has opening at once (per load generator process).
CONNECT_WINDOW = 100
#: Most clients one conns helper holds: a process here may hold 20,000 descriptors at
#: most (a hard limit), so 100,000 clients take 8 helpers.
CONNS_PER_PROC = 12_500
#: Most clients from one source address to one server port: Linux gives each about
#: 28,000 local ports (``net.ipv4.ip_local_port_range`` 32768-60999), with a margin.
CONNS_PER_SOURCE = 25_000
#: How long connecting, pairing, or any single reply may take before the run is abandoned.
REPLY_TIMEOUT = 10.0
#: How long in-flight lines may take to arrive after a workload stops sending.
DRAIN = 5.0

MODES = ("pingpong", "stream", "churn", "paced", "flood")
#: The modes the helper speaks in IRC too (no sessions to churn, no pacing to flood).
IRC_MODES = ("pingpong", "stream")
#: Seconds between a paced pair's round trips: people chatting, under the default --rate.
PACED_GAP = 0.08

C_SOURCE = r"""
/* The hot loop of scripts/bench.py; see scripts/benchload.py for why it is C.
 *
 *   benchload pingpong|stream|churn WARMUP_NS DURATION_NS DRAIN_NS SAMPLES_FILE
 *       stdin: one "FD_A FD_B ID_A ID_B" line per pair (sockets already in a session,
 *       or FREE for churn). stdout: "W", "E" when the measured window starts and
 *       ends, then one "R key=value ..." line. Samples: int64 nanoseconds, native order.
 *   benchload paced|flood WARMUP_NS DURATION_NS DRAIN_NS SAMPLES_FILE GAP_NS
 *       pingpong with GAP_NS between a pair's round trips (people chatting); with
 *       flood, the last pair's A sends without pause (its lines are counted, in
 *       order, as flood_recv; they are paced by the server, so none is waited for).
 *   benchload conns HOST PORT N WINDOW GETS GETS_NS SAMPLES_FILE
 *       opens N clients, WINDOW at a time, each done at its WELCOME; prints
 *       "C elapsed_ns ok failed", times GETS GETs (at most GETS_NS), prints
 *       "G entries=... bad=...", "READY", and holds every client until stdin closes.
 *   benchload irc-pingpong|irc-stream ...
 *       the same in IRC (scripts/ircpeers.py): the ids are the numbers of the nicks
 *       b<ID>, lines go out as "PRIVMSG b<ID> :<line>\r\n" and come in as
 *       ":<nick>!<user>@<host> PRIVMSG <me> :<line>"; a server PING gets its PONG.
 *   benchload ircconns HOST PORT N WINDOW 0 0 SAMPLES_FILE
 *       conns in IRC: each client sends NICK c<k> and USER, done at its 001 (no GETs).
 *   benchload conns HOST PORT N WINDOW GETS GETS_NS SAMPLES_FILE SOURCE
 *       the same as one of a fleet: every socket is bound to the address SOURCE
 *       first ("-": none), the C line goes on with "first_ns last_ns" (CLOCK_MONOTONIC
 *       of the first connect and of the last WELCOME), and the GETs wait for a line
 *       on stdin (every helper of the fleet has connected by then): the request to
 *       time instead of GET (GET FREE).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define LINE 64
#define WINDOW_LINES 64
#define MAX_LOGGED 10
#define READ_CHUNK 16384
#define IRC_PREFIX 40 /* "PRIVMSG b<id> :" and the '\r' of "\r\n" fit in this */

enum { PINGPONG, STREAM, CHURN, PACED, FLOOD };

typedef struct { char *p; size_t len, cap; } buf_t;
typedef struct { int fd, dead; uint32_t events; buf_t in, out; } conn_t;
typedef struct {
    long long id_a, id_b;
    uint64_t a_sent, a_recv, b_sent, b_recv, ops;
    uint64_t a_next, b_next; /* one past the highest sequence number each end has read */
    /* churn */
    uint64_t session;
    int a_connected, a_ended, b_ended, b_msgs, idle;
    int64_t started;
    int64_t due; /* paced: when to send the next ping (0: one is in flight) */
    char to[2][IRC_PREFIX]; /* irc: "PRIVMSG b<id> :" to end A (0) and to end B (1) */
    int to_len[2];
} pair_t;

static int mode, ep, npairs, logged, flooder = -1;
static int irc; /* the IRC dialect: PRIVMSG out, ":nick!u@h PRIVMSG me :line" in */
static int64_t gap;
static uint64_t flood_recv, flood_ooo;
static conn_t *conns;
static pair_t *pairs;
static int64_t t_window, t_end;
static uint64_t errors, ooo, ops;
static int64_t *samples;
static size_t nsamples, capsamples;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void die(const char *what) { perror(what); exit(2); }

static void reserve(buf_t *b, size_t extra) {
    if (b->len + extra <= b->cap) return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra) cap *= 2;
    b->p = realloc(b->p, cap);
    if (!b->p) die("realloc");
    b->cap = cap;
}

static void append(buf_t *b, const char *s, size_t n) {
    reserve(b, n);
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void consume(buf_t *b, size_t n) {
    memmove(b->p, b->p + n, b->len - n);
    b->len -= n;
}

static void sample(int64_t x) {
    if (nsamples == capsamples) {
        capsamples = capsamples ? capsamples * 2 : 65536;
        samples = realloc(samples, capsamples * sizeof *samples);
        if (!samples) die("realloc");
    }
    samples[nsamples++] = x;
}

static int in_window(int64_t t) { return t >= t_window && t < t_end; }

static void note(int key, const char *what, const char *line, size_t n) {
    errors++;
    if (logged++ < MAX_LOGGED)
        fprintf(stderr, "pair %d side %c: %s: %.*s\n", key / 2, "AB"[key % 2], what,
                (int)(n > 200 ? 200 : n), line);
}

static void watch(int key, uint32_t events) {
    conn_t *c = &conns[key];
    struct epoll_event ev = {.events = events, .data.u64 = (uint64_t)key};
    if (epoll_ctl(ep, c->events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl");
    c->events = events;
}

static void fail(int key, const char *why) {
    conn_t *c = &conns[key];
    if (c->dead) return;
    c->dead = 1;
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    note(key, "connection failed", why, strlen(why));
}

static void send_bytes(int key, const char *s, size_t n) {
    conn_t *c = &conns[key];
    if (c->dead) return;
    if (c->out.len == 0) {
        ssize_t w = send(c->fd, s, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno != EAGAIN && errno != EINTR) { fail(key, strerror(errno)); return; }
            w = 0;
        }
        if ((size_t)w == n) return;
        s += w;
        n -= (size_t)w;
    }
    append(&c->out, s, n);
    watch(key, EPOLLIN | EPOLLOUT);
}

static void flush_out(int key) {
    conn_t *c = &conns[key];
    while (c->out.len) {
        ssize_t w = send(c->fd, c->out.p, c->out.len, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN || errno == EINTR) return;
            fail(key, strerror(errno));
            return;
        }
        consume(&c->out, (size_t)w);
    }
    watch(key, EPOLLIN);
}

/* "SEQ TS xxxx...\n": LINE bytes, sequence number and send time in front. */
static void format_line(char *out, uint64_t seq, int64_t ts) {
    int k = snprintf(out, LINE, "%010llu %019lld ", (unsigned long long)seq, (long long)ts);
    memset(out + k, 'x', (size_t)(LINE - 1 - k));
    out[LINE - 1] = '\n';
}

/* The line from pair p's end A (to B) or B (to A) as sent: the bare line, or in IRC
 * "PRIVMSG <nick> :" + the line with "\r\n"; its length (at most LINE + IRC_PREFIX). */
static size_t format_msg(char *out, int p, int to_b, uint64_t seq, int64_t ts) {
    if (!irc) {
        format_line(out, seq, ts);
        return LINE;
    }
    int k = pairs[p].to_len[to_b];
    memcpy(out, pairs[p].to[to_b], (size_t)k);
    format_line(out + k, seq, ts);
    out[k + LINE - 1] = '\r';
    out[k + LINE] = '\n';
    return (size_t)k + LINE + 1;
}

static int parse_line(const char *s, size_t n, uint64_t *seq, int64_t *ts) {
    size_t i = 0;
    uint64_t a = 0;
    int64_t b = 0;
    if (n < 3) return 0;
    for (; i < n && s[i] >= '0' && s[i] <= '9'; i++) a = a * 10 + (uint64_t)(s[i] - '0');
    if (i == 0 || i >= n || s[i] != ' ') return 0;
    size_t j = ++i;
    for (; i < n && s[i] >= '0' && s[i] <= '9'; i++) b = b * 10 + (s[i] - '0');
    if (i == j) return 0;
    *seq = a;
    *ts = b;
    return 1;
}

/* A line is out of order if a later one came first (or it came twice). A gap alone
 * is not: the missing lines are either late (counted when they come) or lost
 * (sent minus received, after the drain). */
static int in_order(uint64_t *next, uint64_t seq) {
    if (seq < *next) return 0;
    *next = seq + 1;
    return 1;
}

static long long parse_id(const char *s, size_t n) {
    long long v = 0;
    for (size_t i = 0; i < n && s[i] >= '0' && s[i] <= '9'; i++) v = v * 10 + (s[i] - '0');
    return v;
}

static int starts(const char *s, size_t n, const char *word) {
    size_t k = strlen(word);
    return n >= k && memcmp(s, word, k) == 0;
}

static void send_ping(int p) {
    char line[LINE + IRC_PREFIX];
    size_t n = format_msg(line, p, 1, pairs[p].a_sent++, now_ns());
    send_bytes(2 * p, line, n);
}

/* B's echo of the line s (n bytes; in the plain protocol its '\n' follows it). */
static void echo(int key, const char *s, size_t n) {
    if (!irc) {
        send_bytes(key, s, n + 1);
        return;
    }
    char out[LINE + IRC_PREFIX + 8];
    pair_t *pr = &pairs[key / 2];
    size_t k = (size_t)pr->to_len[0];
    if (n > LINE) n = LINE; /* longer is not a line of ours: parse_line refused it */
    memcpy(out, pr->to[0], k);
    memcpy(out + k, s, n);
    memcpy(out + k + n, "\r\n", 2);
    send_bytes(key, out, k + n + 2);
}

static void top_up(int p) {
    pair_t *pr = &pairs[p];
    char lines[(LINE + IRC_PREFIX) * WINDOW_LINES];
    uint64_t flying = pr->a_sent - pr->b_recv;
    if (flying >= WINDOW_LINES) return;
    int k = (int)(WINDOW_LINES - flying);
    int64_t t = now_ns();
    size_t at = 0;
    for (int i = 0; i < k; i++) at += format_msg(lines + at, p, 1, pr->a_sent++, t);
    send_bytes(2 * p, lines, at);
}

static void flood(int p, int64_t t) {
    char lines[(LINE + IRC_PREFIX) * 256];
    conn_t *c = &conns[2 * p];
    if (c->out.len || c->dead || t >= t_end) return;
    size_t at = 0;
    for (int i = 0; i < 256; i++) at += format_msg(lines + at, p, 1, pairs[p].a_sent++, t);
    send_bytes(2 * p, lines, at);
}

static void start_session(int p) {
    pair_t *pr = &pairs[p];
    char cmd[64];
    int k = snprintf(cmd, sizeof cmd, "CONNECT %lld\n", pr->id_b);
    pr->a_connected = pr->a_ended = pr->b_ended = pr->b_msgs = 0;
    pr->started = now_ns();
    send_bytes(2 * p, cmd, (size_t)k);
}

static void session_over(int p, int64_t t) {
    pair_t *pr = &pairs[p];
    if (!(pr->a_ended && pr->b_ended)) return;
    if (in_window(t)) {
        ops++;
        pr->ops++;
        sample(t - pr->started);
    }
    pr->session++;
    if (t < t_end) start_session(p);
    else pr->idle = 1;
}

/* An IRC line's text: ":<prefix> PRIVMSG <me> :<text>" sets *m, *mn and returns 1;
 * a PING is answered with its PONG, anything else is noted; both return 0. */
static int irc_text(int key, const char *s, size_t n, const char **m, size_t *mn) {
    const char *q = s, *end = s + n;
    if (n && *q == ':') {
        q = memchr(q, ' ', n);
        if (!q) goto unexpected;
        q++;
    }
    if (starts(q, (size_t)(end - q), "PRIVMSG ")) {
        const char *c = memchr(q + 8, ' ', (size_t)(end - (q + 8)));
        if (!c || c + 1 >= end || c[1] != ':') goto unexpected;
        *m = c + 2;
        *mn = (size_t)(end - *m);
        return 1;
    }
    if (starts(q, (size_t)(end - q), "PING ") && end - q < 512) {
        char out[520];
        memcpy(out, "PONG", 4);
        memcpy(out + 4, q + 4, (size_t)(end - q - 4));
        memcpy(out + (end - q), "\r\n", 2);
        send_bytes(key, out, (size_t)(end - q) + 2);
        return 0;
    }
unexpected:
    note(key, "unexpected line", s, n);
    return 0;
}

static void on_line(int key, const char *s, size_t n, int64_t t) {
    int p = key / 2, side = key % 2;
    pair_t *pr = &pairs[p];
    uint64_t seq;
    int64_t ts;
    if (mode != CHURN || (side == 1 && starts(s, n, "MSG "))) {
        const char *m = s + 4; /* the line, after "MSG " (or PRIVMSG's ':') */
        size_t mn = n - 4;
        if (irc) {
            if (!irc_text(key, s, n, &m, &mn)) return;
        } else if (!starts(s, n, "MSG ")) {
            note(key, "unexpected line", s, n);
            return;
        }
        if (!parse_line(m, mn, &seq, &ts)) {
            note(key, "unexpected line", s, n);
            return;
        }
        if (p == flooder) {
            if (side == 0) note(key, "unexpected line", s, n);
            else if (!in_order(&pr->b_next, seq)) flood_ooo++;
            else flood_recv++;
            return;
        }
        if (mode == PACED || mode == FLOOD) {
            if (side == 1) {
                if (!in_order(&pr->b_next, seq)) ooo++;
                pr->b_recv++;
                echo(key, m, mn);
                pr->b_sent++;
                return;
            }
            if (!in_order(&pr->a_next, seq)) ooo++;
            pr->a_recv++;
            if (in_window(t)) { ops++; pr->ops++; sample(t - ts); }
            if (t < t_end) pr->due = t + gap;
            return;
        }
        if (side == 1) {
            if (mode == CHURN ? seq != pr->session : !in_order(&pr->b_next, seq)) ooo++;
            pr->b_recv++;
            if (mode == PINGPONG) {
                echo(key, m, mn);
                pr->b_sent++;
            } else if (mode == STREAM) {
                if (in_window(t)) { ops++; pr->ops++; sample(t - ts); }
            } else {
                pr->b_msgs++;
            }
        } else if (mode == PINGPONG) {
            if (!in_order(&pr->a_next, seq)) ooo++;
            pr->a_recv++;
            if (in_window(t)) { ops++; pr->ops++; sample(t - ts); }
            if (t < t_end) send_ping(p);
        } else {
            note(key, "unexpected line", s, n);
        }
        return;
    }
    /* churn, control lines */
    if (starts(s, n, "CONNECTED ")) {
        long long id = parse_id(s + 10, n - 10);
        if (id != (side ? pr->id_a : pr->id_b)) note(key, "wrong peer", s, n);
        if (side == 0) {
            char out[LINE + 16];
            format_line(out, pr->session, t);
            memcpy(out + LINE, "#GOODBYE#\n", 10);
            pr->a_connected = 1;
            pr->a_sent++;
            send_bytes(key, out, LINE + 10);
        }
    } else if (starts(s, n, "ENDED ")) {
        if (side) pr->b_ended = 1;
        else pr->a_ended = 1;
        session_over(p, t);
    } else {
        note(key, "unexpected line", s, n);
        if (side == 0 && !pr->a_connected && starts(s, n, "ERROR ") && t < t_end) start_session(p);
    }
}

static void on_readable(int key) {
    conn_t *c = &conns[key];
    reserve(&c->in, READ_CHUNK);
    ssize_t r = recv(c->fd, c->in.p + c->in.len, c->in.cap - c->in.len, 0);
    if (r == 0) { fail(key, "closed by the server"); return; }
    if (r < 0) {
        if (errno != EAGAIN && errno != EINTR) fail(key, strerror(errno));
        return;
    }
    c->in.len += (size_t)r;
    int64_t t = now_ns();
    size_t at = 0;
    for (;;) {
        char *nl = memchr(c->in.p + at, '\n', c->in.len - at);
        if (!nl) break;
        size_t n = (size_t)(nl - (c->in.p + at));
        size_t m = n && c->in.p[at + n - 1] == '\r' ? n - 1 : n;
        on_line(key, c->in.p + at, m, t);
        at += n + 1;
    }
    consume(&c->in, at);
    if (mode == STREAM && key % 2 == 1 && t < t_end) top_up(key / 2);
}

static int finished(int p) {
    pair_t *pr = &pairs[p];
    if (conns[2 * p].dead || conns[2 * p + 1].dead || p == flooder) return 1;
    if (mode == PINGPONG || mode == PACED || mode == FLOOD) return pr->a_recv == pr->a_sent;
    if (mode == STREAM) return pr->b_recv == pr->a_sent;
    return pr->idle;
}

static void write_samples(const char *path) {
    FILE *f = fopen(path, "wb");
    if (!f) die(path);
    if (nsamples && fwrite(samples, sizeof *samples, nsamples, f) != nsamples) die("fwrite");
    if (fclose(f)) die("fclose");
}

static int run_pairs(char **argv) {
    int64_t warmup = atoll(argv[2]), duration = atoll(argv[3]), drain = atoll(argv[4]);
    if (mode == PACED || mode == FLOOD) gap = atoll(argv[6]);
    int cap = 64;
    int fa, fb;
    long long ia, ib;
    conns = calloc((size_t)cap * 2, sizeof *conns);
    pairs = calloc((size_t)cap, sizeof *pairs);
    while (scanf("%d %d %lld %lld", &fa, &fb, &ia, &ib) == 4) {
        if (npairs == cap) {
            cap *= 2;
            conns = realloc(conns, (size_t)cap * 2 * sizeof *conns);
            pairs = realloc(pairs, (size_t)cap * sizeof *pairs);
            if (!conns || !pairs) die("realloc");
        }
        memset(&conns[2 * npairs], 0, 2 * sizeof *conns);
        memset(&pairs[npairs], 0, sizeof *pairs);
        conns[2 * npairs].fd = fa;
        conns[2 * npairs + 1].fd = fb;
        pairs[npairs].id_a = ia;
        pairs[npairs].id_b = ib;
        npairs++;
    }
    if (mode == FLOOD) flooder = npairs - 1;
    for (int p = 0; irc && p < npairs; p++) {
        pair_t *pr = &pairs[p];
        pr->to_len[0] = snprintf(pr->to[0], IRC_PREFIX, "PRIVMSG b%lld :", pr->id_a);
        pr->to_len[1] = snprintf(pr->to[1], IRC_PREFIX, "PRIVMSG b%lld :", pr->id_b);
        if (pr->to_len[0] >= IRC_PREFIX || pr->to_len[1] >= IRC_PREFIX) die("nick too long");
    }
    ep = epoll_create1(0);
    if (ep < 0) die("epoll_create1");
    for (int k = 0; k < 2 * npairs; k++) {
        int one = 1;
        fcntl(conns[k].fd, F_SETFL, fcntl(conns[k].fd, F_GETFL) | O_NONBLOCK);
        setsockopt(conns[k].fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        watch(k, EPOLLIN);
    }
    int64_t t0 = now_ns();
    t_window = t0 + warmup;
    t_end = t_window + duration;
    int64_t deadline = t_end + drain;
    for (int p = 0; p < npairs; p++) {
        if (p == flooder) flood(p, t0);
        else if (mode == PINGPONG || mode == PACED || mode == FLOOD) send_ping(p);
        else if (mode == STREAM) top_up(p);
        else start_session(p);
    }
    int said_w = 0, said_e = 0;
    struct epoll_event evs[256];
    for (;;) {
        int64_t t = now_ns();
        if (!said_w && t >= t_window) {
            printf("W %lld\n", (long long)t);
            fflush(stdout);
            said_w = 1;
        }
        if (!said_e && t >= t_end) {
            printf("E %lld\n", (long long)t);
            fflush(stdout);
            said_e = 1;
        }
        if (said_e) {
            int done = 1;
            for (int p = 0; p < npairs && done; p++) done = finished(p);
            if (done || t >= deadline) break;
        }
        int n = epoll_wait(ep, evs, 256, gap ? 1 : 5);
        if (n < 0 && errno != EINTR) die("epoll_wait");
        for (int i = 0; i < n; i++) {
            int key = (int)evs[i].data.u64;
            if (conns[key].dead) continue;
            if (evs[i].events & EPOLLOUT) flush_out(key);
            if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) on_readable(key);
        }
        if (gap) {
            t = now_ns();
            for (int p = 0; p < npairs; p++) {
                if (p == flooder) flood(p, t);
                else if (pairs[p].due && t >= pairs[p].due && t < t_end) {
                    pairs[p].due = 0;
                    send_ping(p);
                }
            }
        }
    }
    long long lost = 0, sent = 0, recv = 0;
    uint64_t pmin = UINT64_MAX, pmax = 0;
    int unfinished = 0;
    for (int p = 0; p < npairs; p++) {
        pair_t *pr = &pairs[p];
        if (p == flooder) continue; /* paced by the server: its backlog is not lost */
        lost += (long long)(pr->a_sent - pr->b_recv);
        if (mode != STREAM && mode != CHURN) lost += (long long)(pr->b_sent - pr->a_recv);
        sent += (long long)(pr->a_sent + pr->b_sent);
        recv += (long long)(pr->a_recv + pr->b_recv);
        if (pr->ops < pmin) pmin = pr->ops;
        if (pr->ops > pmax) pmax = pr->ops;
        unfinished += !finished(p);
    }
    write_samples(argv[5]);
    printf("R ops=%llu lost=%lld ooo=%llu errors=%llu sent=%lld recv=%lld window_ns=%lld "
           "pair_min=%llu pair_max=%llu unfinished=%d flood_recv=%llu flood_ooo=%llu\n",
           (unsigned long long)ops, lost, (unsigned long long)ooo, (unsigned long long)errors,
           sent, recv, (long long)(t_end - t_window), (unsigned long long)(npairs ? pmin : 0),
           (unsigned long long)pmax, unfinished, (unsigned long long)flood_recv,
           (unsigned long long)flood_ooo);
    fflush(stdout);
    return 0;
}

static int run_conns(char **argv) {
    const char *host = argv[2];
    int port = atoi(argv[3]), n = atoi(argv[4]), window = atoi(argv[5]), gets = atoi(argv[6]);
    int64_t gets_ns = atoll(argv[7]);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) die("inet_pton");
    /* one of a fleet: its own source address, so that each address's local ports suffice */
    int fleet = argv[9] != NULL, bound = fleet && strcmp(argv[9], "-");
    struct sockaddr_in src = {.sin_family = AF_INET};
    if (bound && inet_pton(AF_INET, argv[9], &src.sin_addr) != 1) die("inet_pton source");
    int64_t t_last = 0;
    char request[64] = "GET\n"; /* a fleet's helpers are told which request to time */
    size_t request_len = 4;
    conns = calloc((size_t)n, sizeof *conns);
    int *state = calloc((size_t)n, sizeof *state); /* 0 opening, 1 welcomed, 2 failed */
    ep = epoll_create1(0);
    if (ep < 0 || !conns || !state) die("setup");
    int started = 0, opening = 0, ok = 0, failed = 0, first = -1;
    int64_t t0 = now_ns(), deadline = t0 + 300LL * 1000000000LL;
    struct epoll_event evs[256];
    while (ok + failed < n && now_ns() < deadline) {
        while (started < n && opening < window) {
            int k = started++, one = 1;
            int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
            if (fd < 0) {
                if (logged++ < MAX_LOGGED) perror("socket");
                state[k] = 2;
                failed++;
                continue;
            }
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            conns[k].fd = fd;
            /* the port is chosen at connect(), per destination: not one per bound socket */
            if (bound && (setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one) < 0
                          || bind(fd, (struct sockaddr *)&src, sizeof src) < 0)) {
                if (logged++ < MAX_LOGGED) perror("bind");
                state[k] = 2;
                failed++;
                close(fd);
                continue;
            }
            if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS) {
                if (logged++ < MAX_LOGGED) perror("connect");
                state[k] = 2;
                failed++;
                close(fd);
                continue;
            }
            watch(k, EPOLLIN);
            opening++;
        }
        int m = epoll_wait(ep, evs, 256, 100);
        if (m < 0 && errno != EINTR) die("epoll_wait");
        for (int i = 0; i < m; i++) {
            int k = (int)evs[i].data.u64;
            conn_t *c = &conns[k];
            if (state[k]) continue;
            reserve(&c->in, 256);
            ssize_t r = recv(c->fd, c->in.p + c->in.len, c->in.cap - c->in.len, 0);
            if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
            char *nl = r > 0 ? memchr(c->in.p, '\n', c->in.len + (size_t)r) : NULL;
            if (r > 0) c->in.len += (size_t)r;
            if (r > 0 && !nl) continue;
            epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
            opening--;
            if (nl && starts(c->in.p, c->in.len, "WELCOME ")) {
                state[k] = 1;
                ok++;
                t_last = now_ns();
                if (first < 0) first = k;
                c->in.len = 0;
            } else {
                if (logged++ < MAX_LOGGED)
                    fprintf(stderr, "client %d: %.*s\n", k, (int)(r > 0 ? c->in.len : 0),
                            r > 0 ? c->in.p : "closed before WELCOME");
                state[k] = 2;
                failed++;
            }
        }
    }
    int64_t elapsed = now_ns() - t0;
    if (fleet) {
        printf("C %lld %d %d %lld %lld\n", (long long)elapsed, ok, failed, (long long)t0,
               (long long)t_last);
        fflush(stdout);
        ssize_t got = read(0, request, sizeof request - 1);
        if (got <= 0 || request[got - 1] != '\n') return 0; /* the fleet was called off */
        request_len = (size_t)got;
    } else {
        printf("C %lld %d %d\n", (long long)elapsed, ok, failed);
        fflush(stdout);
    }
    long long entries = -1;
    int bad = 0;
    if (first >= 0) {
        conn_t *c = &conns[first];
        int64_t g0 = now_ns();
        for (int g = 0; g < gets && now_ns() - g0 < gets_ns; g++) {
            int64_t t = now_ns();
            c->in.len = 0;
            if (send(c->fd, request, request_len, MSG_NOSIGNAL) != (ssize_t)request_len) {
                bad++;
                break;
            }
            char *nl = NULL;
            while (!nl && now_ns() - t < 10LL * 1000000000LL) {
                struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
                if (poll(&pfd, 1, 1000) <= 0) continue;
                reserve(&c->in, 65536);
                ssize_t r = recv(c->fd, c->in.p + c->in.len, c->in.cap - c->in.len, 0);
                if (r <= 0) { if (r < 0 && errno == EAGAIN) continue; break; }
                size_t old = c->in.len;
                c->in.len += (size_t)r;
                nl = memchr(c->in.p + old, '\n', (size_t)r);
            }
            if (!nl) { bad++; break; }
            sample(now_ns() - t);
            entries = 0;
            for (char *q = c->in.p; q < nl; q++) entries += *q == '=';
            if (!starts(c->in.p, c->in.len, "CLIENTS")) bad++;
        }
    }
    write_samples(argv[8]);
    printf("G entries=%lld bad=%d\nREADY\n", entries, bad);
    fflush(stdout);
    char junk[64];
    while (read(0, junk, sizeof junk) > 0) {}
    return 0;
}

/* ircconns: like conns, but each client registers (NICK c<k>, USER) and counts at its
 * 001; a PING on the way is answered. No GETs: IRC has no such command. */
static int irc_line_done(int k, const char *s, size_t n) {
    const char *q = s, *end = s + n;
    if (n && *q == ':') {
        q = memchr(q, ' ', n);
        if (!q) return -1;
        q++;
    }
    if (starts(q, (size_t)(end - q), "001 ")) return 1;
    if (starts(q, (size_t)(end - q), "PING ") && end - q < 512) {
        char out[520];
        memcpy(out, "PONG", 4);
        memcpy(out + 4, q + 4, (size_t)(end - q - 4));
        memcpy(out + (end - q), "\r\n", 2);
        append(&conns[k].out, out, (size_t)(end - q) + 2);
        watch(k, EPOLLIN | EPOLLOUT);
        return 0;
    }
    if (starts(q, (size_t)(end - q), "ERROR") || (q + 3 < end && q[0] >= '4' && q[0] <= '5'
                                                  && q[3] == ' '))
        return -1; /* refused: ERROR, or a 4xx/5xx numeric (a nick in use, ...) */
    return 0;
}

static int run_irc_conns(char **argv) {
    const char *host = argv[2];
    int port = atoi(argv[3]), n = atoi(argv[4]), window = atoi(argv[5]);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) die("inet_pton");
    conns = calloc((size_t)n, sizeof *conns);
    int *state = calloc((size_t)n, sizeof *state); /* 0 opening, 1 registered, 2 failed */
    ep = epoll_create1(0);
    if (ep < 0 || !conns || !state) die("setup");
    int started = 0, opening = 0, ok = 0, failed = 0;
    int64_t t0 = now_ns(), deadline = t0 + 300LL * 1000000000LL;
    struct epoll_event evs[256];
    while (ok + failed < n && now_ns() < deadline) {
        while (started < n && opening < window) {
            int k = started++, one = 1;
            int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
            if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
                if (fd >= 0 && errno == EINPROGRESS) goto opened;
                if (logged++ < MAX_LOGGED) perror(fd < 0 ? "socket" : "connect");
                if (fd >= 0) close(fd);
                state[k] = 2;
                failed++;
                continue;
            }
        opened:
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            conns[k].fd = fd;
            char reg[96];
            int len = snprintf(reg, sizeof reg, "NICK c%d\r\nUSER u 0 * :bench\r\n", k);
            append(&conns[k].out, reg, (size_t)len);
            watch(k, EPOLLIN | EPOLLOUT); /* writable once connected */
            opening++;
        }
        int m = epoll_wait(ep, evs, 256, 100);
        if (m < 0 && errno != EINTR) die("epoll_wait");
        for (int i = 0; i < m; i++) {
            int k = (int)evs[i].data.u64, done = 0;
            conn_t *c = &conns[k];
            if (state[k]) continue;
            if ((evs[i].events & EPOLLOUT) && c->out.len) {
                ssize_t w = send(c->fd, c->out.p, c->out.len, MSG_NOSIGNAL);
                if (w < 0 && errno != EAGAIN && errno != EINTR) done = -1;
                if (w > 0) consume(&c->out, (size_t)w);
                if (!done && !c->out.len) watch(k, EPOLLIN);
            }
            if (!done && (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))) {
                reserve(&c->in, 4096);
                ssize_t r = recv(c->fd, c->in.p + c->in.len, c->in.cap - c->in.len, 0);
                if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) done = -1;
                if (r > 0) c->in.len += (size_t)r;
                size_t at = 0;
                for (char *nl; !done && (nl = memchr(c->in.p + at, '\n', c->in.len - at));) {
                    size_t len = (size_t)(nl - (c->in.p + at));
                    done = irc_line_done(k, c->in.p + at, len && nl[-1] == '\r' ? len - 1 : len);
                    at += len + 1;
                }
                if (done < 0 && logged++ < MAX_LOGGED)
                    fprintf(stderr, "client %d: %.*s\n", k,
                            (int)(c->in.len > 200 ? 200 : c->in.len),
                            c->in.len ? c->in.p : "closed before 001");
                consume(&c->in, at);
            }
            if (!done) continue;
            epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
            opening--;
            c->in.len = 0;
            if (done > 0) {
                state[k] = 1;
                ok++;
            } else {
                state[k] = 2;
                failed++;
            }
        }
    }
    int64_t elapsed = now_ns() - t0;
    printf("C %lld %d %d\n", (long long)elapsed, ok, failed);
    fflush(stdout);
    write_samples(argv[8]);
    printf("G entries=%d bad=0\nREADY\n", ok);
    fflush(stdout);
    char junk[64];
    while (read(0, junk, sizeof junk) > 0) {}
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 9 && !strcmp(argv[1], "ircconns")) return run_irc_conns(argv);
    if (argc > 1 && !strncmp(argv[1], "irc-", 4)) {
        irc = 1;
        argv[1] += 4;
        if (strcmp(argv[1], "pingpong") && strcmp(argv[1], "stream")) {
            fprintf(stderr, "IRC: only pingpong and stream\n");
            return 2;
        }
    }
    if (argc == 6 && !strcmp(argv[1], "pingpong")) mode = PINGPONG;
    else if (argc == 6 && !strcmp(argv[1], "stream")) mode = STREAM;
    else if (argc == 6 && !strcmp(argv[1], "churn")) mode = CHURN;
    else if (argc == 7 && !strcmp(argv[1], "paced")) mode = PACED;
    else if (argc == 7 && !strcmp(argv[1], "flood")) mode = FLOOD;
    else if ((argc == 9 || argc == 10) && !strcmp(argv[1], "conns")) return run_conns(argv);
    else { fprintf(stderr, "usage: see scripts/benchload.py\n"); return 2; }
    return run_pairs(argv);
}
"""


def build_helper(directory: Path) -> Path:
    """Compile ``C_SOURCE`` into ``directory`` (named by its hash, so a rerun reuses it)."""
    digest = hashlib.sha256(C_SOURCE.encode()).hexdigest()[:12]
    exe = directory / f"benchload-{digest}"
    if exe.exists():
        return exe
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        raise RuntimeError("the load generator is C: gcc (or cc) must be installed")
    source = directory / f"benchload-{digest}.c"
    source.write_text(C_SOURCE)
    done = subprocess.run(
        [compiler, "-O2", "-Wall", "-o", str(exe), str(source)], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"could not compile the load generator:\n{done.stderr}")
    return exe


# ---- clients, opened and paired from Python ----------------------------------------------


@dataclass
class Client:
    """One connection the benchmark opened, with the id the server gave it."""

    sock: socket.socket
    cid: int = 0
    #: the client's local port: the server process holding the other end has it as raddr
    port: int = 0
    pending: bytes = b""

    def send(self, text: str) -> None:
        self.sock.sendall(text.encode() + b"\n")

    def read_line(self, timeout: float = REPLY_TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"client {self.cid}: no reply within {timeout} s")
            self.sock.settimeout(left)
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError(f"client {self.cid}: closed by the server")
            self.pending += data
        line, _, self.pending = self.pending.partition(b"\n")
        return line.decode(errors="replace").rstrip("\r")

    def expect(self, want: str) -> None:
        line = self.read_line()
        if line != want:
            raise RuntimeError(f"client {self.cid}: expected {want!r}, got {line!r}")

    def close(self) -> None:
        self.sock.close()


def connect(host: str, port: int) -> Client:
    """A new client, returned once its ``WELCOME`` has arrived."""
    sock = socket.create_connection((host, port), timeout=REPLY_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client = Client(sock, port=sock.getsockname()[1])
    line = client.read_line()
    word, _, rest = line.partition(" ")
    if word != "WELCOME" or not rest.isdigit():
        sock.close()
        raise RuntimeError(f"expected WELCOME <id>, got {line!r}")
    client.cid = int(rest)
    return client


def tree(pid: int) -> list[psutil.Process]:
    """The server process ``pid`` and everything it started (workers, matchmaker, ...)."""
    try:
        top = psutil.Process(pid)
        return [top, *top.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


#: A server's top process, or several (hosts of a cluster, its Redis) by name.
Servers = int | Mapping[str, int]


def server_tree(servers: Servers) -> tuple[list[psutil.Process], dict[int, str]]:
    """Every process of ``servers`` and, for named ones, the prefix of each one's title."""
    if isinstance(servers, int):
        return tree(servers), {}
    procs: list[psutil.Process] = []
    names: dict[int, str] = {}
    for name, pid in servers.items():
        for p in tree(pid):
            procs.append(p)
            names[p.pid] = f"{name} "
    return procs, names


def holders(procs: Iterable[psutil.Process], server_port: int, ports: set[int]) -> dict[int, int]:
    """Which server process holds the server end of each client's connection, by client port.

    A socket handed from process to process is briefly held by both; the one that
    also listens on the port (an acceptor) is then not counted.
    """
    seen: dict[int, set[int]] = {}
    listening: set[int] = set()
    for p in procs:
        try:
            conns = p.net_connections(kind="tcp")
        except psutil.Error:
            continue
        for c in conns:
            if c.laddr and c.laddr.port == server_port:
                if c.status == psutil.CONN_LISTEN:
                    listening.add(p.pid)
                elif c.raddr and c.raddr.port in ports:
                    seen.setdefault(c.raddr.port, set()).add(p.pid)
    out = {}
    for port, pids in seen.items():
        if len(pids) > 1:
            pids = (pids - listening) or pids
        if len(pids) == 1:
            out[port] = next(iter(pids))
    return out


def holders_of(pid: int, port: int, ports: set[int], what: str) -> dict[int, int]:
    """``holders`` of every one of ``ports`` in ``pid``'s processes, looked up again while a
    hand-over is in progress; fails after a second, saying whose clients went missing."""
    for _ in range(20):
        where = holders(tree(pid), port, ports)
        if len(where) == len(ports):
            return where
        time.sleep(0.05)  # polling the process table: nothing to wait on
    raise RuntimeError(
        f"could not find the clients of {what} in its processes "
        "(psutil needs to see the server's sockets: same user, or root)"
    )


def plan_pairs(groups: Sequence[int], count: int, kind: str) -> list[tuple[int, int]] | None:
    """``count`` pairs of client indexes with both ends in one group (same) or in two (cross).

    ``groups[i]`` names the server process holding client ``i``. Same-process pairs
    are taken from the groups in turn, so they spread over the workers; cross pairs
    take one end from each of the two fullest groups. The earlier client is end A.
    None when these clients cannot make ``count`` such pairs.
    """
    members: dict[int, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    out: list[tuple[int, int]] = []
    if kind == "same":
        per_group = [[(m[j], m[j + 1]) for j in range(0, len(m) - 1, 2)] for m in members.values()]
        for turn in range(max((len(p) for p in per_group), default=0)):
            out.extend(p[turn] for p in per_group if turn < len(p))
    elif kind == "cross":
        queues = [list(m) for m in members.values()]
        while len(out) < count:
            queues.sort(key=len, reverse=True)
            if len(queues) < 2 or not queues[1]:
                break
            a, b = queues[0].pop(0), queues[1].pop(0)
            out.append((min(a, b), max(a, b)))
    else:
        raise ValueError(f"placement must be same or cross, not {kind!r}")
    return out[:count] if len(out) >= count else None


@dataclass
class PairSet:
    """Clients in pairs, ready for the helper (no pairs: the server cannot place them so).

    ``groups`` counts pairs per server process; ``holders`` is how many server
    processes held the clients that were opened.
    """

    pairs: list[tuple[Client, Client]]
    groups: dict[int, int] = field(default_factory=dict)
    holders: int = 0

    def close(self) -> None:
        for a, b in self.pairs:
            a.close()
            b.close()


def open_pairs(
    host: str, port: int, server_pid: int, count: int, kind: str, session: bool
) -> PairSet:
    """Connect clients one at a time until ``count`` pairs of the ``kind`` placement exist.

    Clients connect sequentially, each after the previous one's WELCOME, so a
    round-robin server alternates them over its workers. Where each one landed is
    then read from the server's processes, not assumed. With ``session``, each pair
    is put in a session (``CONNECT``); churn pairs stay FREE. Clients that are not
    needed are closed. No pairs when the server cannot place clients so (``cross``
    on a single-process server).
    """
    clients: list[Client] = []
    limit = 2 * count + 8
    plan: list[tuple[int, int]] | None = None
    where: dict[int, int] = {}
    try:
        while plan is None and len(clients) < limit:
            want = 2 * count if not clients else len(clients) + 2
            while len(clients) < want:
                clients.append(connect(host, port))
            where = holders_of(server_pid, port, {c.port for c in clients}, "the server")
            groups = [where[c.port] for c in clients]
            plan = plan_pairs(groups, count, kind)
            if plan is None and kind == "cross" and len(set(groups)) == 1:
                break
    except BaseException:
        for c in clients:
            c.close()
        raise
    used = {i for pair in plan or [] for i in pair}
    for i, c in enumerate(clients):
        if i not in used:
            c.close()
    pairs = [(clients[a], clients[b]) for a, b in plan or []]
    result = PairSet(pairs, holders=len(set(where.values())))
    for a, _ in pairs:
        result.groups[where[a.port]] = result.groups.get(where[a.port], 0) + 1
    if session:
        enter_sessions(result)
    return result


def enter_sessions(pairset: PairSet) -> None:
    """Put every pair in a session: A sends ``CONNECT`` B, both read ``CONNECTED``."""
    try:
        for a, b in pairset.pairs:
            a.send(f"CONNECT {b.cid}")
        for a, b in pairset.pairs:
            a.expect(f"CONNECTED {b.cid}")
            b.expect(f"CONNECTED {a.cid}")
    except BaseException:
        pairset.close()
        raise


#: One host of a cluster: its address and the pid of its top process.
Endpoint = tuple[str, int, int]


def open_host_pairs(hosts: Sequence[Endpoint], count: int, session: bool) -> PairSet:
    """``count`` pairs whose two ends are clients of two different hosts (servers).

    Pair i has end A on host i mod H and end B on the next host, so with two hosts
    every A is on the first and every B on the second. That each client is held by
    the server it connected to (and not, say, by a host reached through a proxy) is
    checked with psutil, as in ``open_pairs``. ``groups`` counts pairs by A's host.
    """
    if len(hosts) < 2:
        raise ValueError("pairs across hosts need two hosts at least")
    ends: list[tuple[int, int]] = [(i % len(hosts), (i + 1) % len(hosts)) for i in range(count)]
    pairs: list[tuple[Client, Client]] = []
    result = PairSet(pairs, holders=len(hosts))
    try:
        for ha, hb in ends:
            a = connect(*hosts[ha][:2])
            pairs.append((a, connect(*hosts[hb][:2])))
        on: dict[int, set[int]] = {}
        for (ha, hb), (a, b) in zip(ends, pairs, strict=True):
            on.setdefault(ha, set()).add(a.port)
            on.setdefault(hb, set()).add(b.port)
        for k, ports in on.items():
            host, port, pid = hosts[k]
            holders_of(pid, port, ports, f"host {k + 1} ({host}:{port})")  # each on its host
        for ha, _ in ends:
            result.groups[ha] = result.groups.get(ha, 0) + 1
    except BaseException:
        result.close()
        raise
    if session:
        enter_sessions(result)
    return result


# ---- running the helper -----------------------------------------------------------------


class LineReader:
    """Lines from a child's stdout, each waited for no longer than a deadline."""

    def __init__(self, proc: subprocess.Popen[bytes], name: str = "the load generator") -> None:
        assert proc.stdout is not None
        self.proc, self.name = proc, name
        self.fd = proc.stdout.fileno()
        self.buf = b""

    def line(self, deadline: float) -> str:
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.name} did not answer in time")
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                data = os.read(self.fd, 65536)
                if not data:
                    raise RuntimeError(f"{self.name} exited early: {stderr_of(self.proc)}")
                self.buf += data
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode()


def stderr_of(proc: subprocess.Popen[bytes]) -> str:
    """Whatever the helper said on stderr, once it has exited (or been killed)."""
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    return proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""


def cpu_by_pid(procs: Iterable[psutil.Process]) -> dict[int, float]:
    """CPU seconds (user + system) of each live process."""
    out = {}
    for p in procs:
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        out[p.pid] = t.user + t.system
    return out


def cpu_seconds(procs: Iterable[psutil.Process]) -> float:
    return sum(cpu_by_pid(procs).values())


def system_seconds(procs: Iterable[psutil.Process]) -> float:
    """CPU seconds spent in the kernel (for a load generator: mostly loopback TCP)."""
    total = 0.0
    for p in procs:
        try:
            total += p.cpu_times().system
        except psutil.Error:
            continue
    return total


def title(p: psutil.Process) -> str:
    """``matchmaker: worker 1`` (setproctitle pads argv with blanks), else the program name."""
    try:
        text = " ".join(p.cmdline()).strip()
        return text if text.startswith("matchmaker: ") else p.name()
    except psutil.Error:
        return "?"


def total_rss(procs: Iterable[psutil.Process]) -> int:
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            continue
    return total


def total_pss(procs: Iterable[psutil.Process]) -> int:
    """Proportional set size: pages shared by N processes count 1/N in each.

    RSS counts the interpreter and libraries once per process, so a server of
    five processes pays for them five times over; PSS says what it really costs.
    """
    total = 0
    for p in procs:
        try:
            total += getattr(p.memory_full_info(), "pss", 0)
        except psutil.Error:
            continue
    return total


@dataclass
class Usage:
    """CPU spent over a measured window: by the server, by the load generator, by nobody."""

    wall: float = 0.0
    server: float = 0.0  # CPU seconds, every server process
    load: float = 0.0  # CPU seconds, every helper process
    idle: float = 0.0  # share of the machine's CPU time that was idle
    #: cores used by each server process, by title: which one is the bottleneck
    by_process: dict[str, float] = field(default_factory=dict)
    load_system: float = 0.0  # of ``load``, CPU seconds in the kernel
    #: CPU seconds of every other process on the machine: noise, if it is not near 0
    others: float = 0.0

    @property
    def load_share(self) -> float:
        """The load generator's share of the CPU the benchmark used (server + load)."""
        busy = self.server + self.load
        return self.load / busy if busy else 0.0


class Meter:
    """Takes a CPU snapshot of two process groups and the machine, then the difference.

    ``names`` puts a prefix before the title of some server processes (``h1 ``: the
    processes of two hosts have the same titles).
    """

    def __init__(
        self,
        server: list[psutil.Process],
        load: list[psutil.Process],
        names: Mapping[int, str] | None = None,
    ) -> None:
        self.server, self.load = server, load
        self.names = dict(names or {})
        self.start()

    def start(self) -> None:
        self.titles = {p.pid: self.names.get(p.pid, "") + title(p) for p in self.server}
        self.t = time.perf_counter()
        self.s, self.ld = cpu_by_pid(self.server), cpu_seconds(self.load)
        self.ld_sys = system_seconds(self.load)
        self.machine = psutil.cpu_times()

    def stop(self) -> Usage:
        machine = psutil.cpu_times()
        wall = time.perf_counter() - self.t
        server = cpu_by_pid(self.server)
        load = cpu_seconds(self.load) - self.ld
        total = sum(machine) - sum(self.machine)
        idle_s = machine.idle - self.machine.idle
        idle = idle_s / total if total > 0 else 0.0
        spent = {pid: server[pid] - self.s.get(pid, 0.0) for pid in server}
        by_process = {
            self.titles.get(pid, str(pid)): round(cpu / wall, 3) if wall else 0.0
            for pid, cpu in spent.items()
            if cpu > 0
        }
        load_system = system_seconds(self.load) - self.ld_sys
        others = max(0.0, total - idle_s - sum(spent.values()) - load)
        return Usage(wall, sum(spent.values()), load, idle, by_process, load_system, others)


def parse_fields(line: str) -> dict[str, int]:
    """``R ops=1 lost=0 ...`` -> {"ops": 1, "lost": 0, ...}."""
    out = {}
    for item in line.split()[1:]:
        key, _, value = item.partition("=")
        out[key] = int(value)
    return out


@dataclass
class PairsResult:
    """What the helpers measured over one window."""

    counts: dict[str, int]
    samples: array.array[int]
    usage: Usage
    log: str = ""


def run_pairs(
    exe: Path,
    mode: str,
    pairset: PairSet,
    server_pid: Servers,
    warmup: float,
    duration: float,
    workdir: Path,
    procs: int = 1,
    irc: bool = False,
) -> PairsResult:
    """Drive ``pairset`` in ``mode`` for ``warmup`` + ``duration`` seconds with ``procs`` helpers.

    Pairs are dealt round robin over the helpers. The CPU of the server and of the
    helpers is measured between the helpers' window marks. With ``irc`` the
    clients are registered IRC clients whose ``cid`` is the number of their nick
    (``scripts/ircpeers.py``), driven in the helper's IRC dialect (pingpong, stream).
    """
    if mode not in MODES or (irc and mode not in IRC_MODES):
        raise ValueError(f"unknown mode {mode!r}" + (" in IRC" if irc else ""))
    chunks = [pairset.pairs[i::procs] for i in range(procs)]
    chunks = [c for c in chunks if c]
    ns = 1_000_000_000
    helpers: list[subprocess.Popen[bytes]] = []
    paths = [workdir / f"samples-{mode}-{i}.bin" for i in range(len(chunks))]
    try:
        for chunk, path in zip(chunks, paths, strict=True):
            fds = [fd for a, b in chunk for fd in (a.sock.fileno(), b.sock.fileno())]
            argv = [str(exe), ("irc-" if irc else "") + mode, str(int(warmup * ns))]
            argv += [str(int(duration * ns))]
            argv += [str(int(DRAIN * ns)), str(path)]
            argv += [str(int(PACED_GAP * ns))] if mode in ("paced", "flood") else []
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=fds,
            )
            helpers.append(proc)
            assert proc.stdin is not None
            spec = "".join(
                f"{a.sock.fileno()} {b.sock.fileno()} {a.cid} {b.cid}\n" for a, b in chunk
            )
            proc.stdin.write(spec.encode())
            proc.stdin.close()
        readers = [LineReader(p) for p in helpers]
        load = [psutil.Process(p.pid) for p in helpers]
        server, names = server_tree(server_pid)
        deadline = time.monotonic() + warmup + duration + DRAIN + REPLY_TIMEOUT
        for r in readers:
            if not r.line(deadline).startswith("W"):
                raise RuntimeError("the load generator lost its step")
        meter = Meter(server, load, names)
        for r in readers:
            if not r.line(deadline).startswith("E"):
                raise RuntimeError("the load generator lost its step")
        usage = meter.stop()
        counts: dict[str, int] = {}
        for r in readers:
            for key, value in parse_fields(r.line(deadline)).items():
                if key == "pair_min":
                    counts[key] = min(counts.get(key, value), value)
                elif key in ("pair_max", "window_ns"):
                    counts[key] = max(counts.get(key, value), value)
                else:
                    counts[key] = counts.get(key, 0) + value
        log = "\n".join(s for s in (stderr_of(p) for p in helpers) if s)
        samples = array.array("q")
        for path in paths:
            samples.frombytes(path.read_bytes())
            path.unlink()
        return PairsResult(counts, samples, usage, log)
    finally:
        for p in helpers:
            if p.poll() is None:
                p.kill()
                p.wait()


@dataclass
class ConnsResult:
    """Idle clients: how long they took to connect, what they cost, how fast GET still is."""

    clients: int
    ok: int
    failed: int
    connect_seconds: float
    rss_before: int
    rss_after: int
    pss_after: int
    entries: int  # ids in the last CLIENTS line
    bad: int  # GETs with no or a wrong reply
    samples: array.array[int]
    usage: Usage
    log: str = ""
    #: (a fleet) each server process's RSS and PSS with every client connected, by title
    by_process: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: (a fleet) how many helper processes, and source addresses, the clients came from
    helpers: int = 1
    sources: int = 1
    #: the request timed at C clients
    request: str = "GET"


def settled_rss(host: str, port: int, server_pid: int, bound: float = 5.0) -> int:
    """Total RSS of an idle server once it is up: one client served, and RSS no longer moving.

    A server may say it listens before its children have finished importing;
    that growth is not the clients' cost.
    """
    connect(host, port).close()
    deadline = time.monotonic() + bound
    last = total_rss(tree(server_pid))
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = total_rss(tree(server_pid))
        if abs(now - last) <= last // 200:
            return now
        last = now
    return last


def run_conns(
    exe: Path,
    host: str,
    port: int,
    server_pid: int,
    clients: int,
    workdir: Path,
    gets: int = 50,
    gets_seconds: float = 3.0,
) -> ConnsResult:
    """Open ``clients`` idle clients, time them, time ``GET`` at that size, weigh the server.

    RSS is the sum over every server process, taken before the first client and
    again while all of them are still connected.
    """
    path = workdir / "samples-conns.bin"
    rss_before = settled_rss(host, port, server_pid)
    argv = [str(exe), "conns", host, str(port), str(clients), str(CONNECT_WINDOW), str(gets)]
    argv += [str(int(gets_seconds * 1e9)), str(path)]
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        reader = LineReader(proc)
        meter = Meter(tree(server_pid), [psutil.Process(proc.pid)])
        deadline = time.monotonic() + 300 + REPLY_TIMEOUT
        _, elapsed, ok, failed = reader.line(deadline).split()
        usage = meter.stop()
        got = parse_fields(reader.line(deadline))
        if reader.line(deadline) != "READY":
            raise RuntimeError("the load generator lost its step")
        rss_after = total_rss(tree(server_pid))
        pss_after = total_pss(tree(server_pid))
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=REPLY_TIMEOUT)
        samples = array.array("q", path.read_bytes())
        path.unlink()
        return ConnsResult(
            clients=clients,
            ok=int(ok),
            failed=int(failed),
            connect_seconds=int(elapsed) / 1e9,
            rss_before=rss_before,
            rss_after=rss_after,
            pss_after=pss_after,
            entries=got["entries"],
            bad=got["bad"],
            samples=samples,
            usage=usage,
            log=stderr_of(proc),
        )
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def memory_by_process(procs: Iterable[psutil.Process]) -> dict[str, tuple[int, int]]:
    """Each process's (RSS, PSS), by title (``matchmaker: worker 3``)."""
    out = {}
    for p in procs:
        try:
            info = p.memory_full_info()
        except psutil.Error:
            continue
        name = title(p)
        out[f"{name} {p.pid}" if name in out else name] = (info.rss, getattr(info, "pss", 0))
    return out


def run_conns_fleet(
    exe: Path,
    host: str,
    port: int,
    server_pid: int,
    shares: Sequence[Share],
    workdir: Path,
    gets: int = 50,
    gets_seconds: float = 3.0,
    request: str = "GET FREE",
) -> ConnsResult:
    """``run_conns`` with the clients split over several helpers (``plan_fleet``).

    The helpers start together and connect at once, each from its source address,
    so the connect time is the fleet's: from the first helper's first connect to
    the last ``WELCOME`` of any. Only once every helper is done does the first
    one time ``request`` (``GET FREE``), whose reply then lists every client.
    """
    if not request or len(request) > 60 or "\n" in request:
        raise ValueError(f"not a request to time: {request!r}")
    path = workdir / "samples-conns.bin"
    rss_before = settled_rss(host, port, server_pid)
    helpers: list[subprocess.Popen[bytes]] = []
    try:
        for k, share in enumerate(shares):
            argv = [str(exe), "conns", host, str(port), str(share.clients), str(CONNECT_WINDOW)]
            argv += [str(gets if k == 0 else 0), str(int(gets_seconds * 1e9)), str(path)]
            argv += [share.source]
            helpers.append(
                subprocess.Popen(
                    argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
                )  # fmt: skip
            )
        readers = [LineReader(proc) for proc in helpers]
        meter = Meter(tree(server_pid), [psutil.Process(proc.pid) for proc in helpers])
        deadline = time.monotonic() + 300 + REPLY_TIMEOUT
        ok = failed = 0
        firsts, lasts = [], []
        for reader in readers:
            _, _, n_ok, n_failed, first_ns, last_ns = reader.line(deadline).split()
            ok, failed = ok + int(n_ok), failed + int(n_failed)
            firsts.append(int(first_ns))
            if int(n_ok):
                lasts.append(int(last_ns))
        usage = meter.stop()
        for proc in helpers:  # every client is in: the GETs may go
            assert proc.stdin is not None
            proc.stdin.write(request.encode() + b"\n")
            proc.stdin.flush()
        got: dict[str, int] = {}
        for k, reader in enumerate(readers):
            fields = parse_fields(reader.line(deadline + gets_seconds))
            if k == 0:
                got = fields
            if reader.line(deadline) != "READY":
                raise RuntimeError("the load generator lost its step")
        procs = tree(server_pid)
        by_process = memory_by_process(procs)
        rss_after = sum(rss for rss, _ in by_process.values())
        pss_after = sum(pss for _, pss in by_process.values())
        for proc in helpers:
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(timeout=REPLY_TIMEOUT)
        samples = array.array("q", path.read_bytes())
        path.unlink()
        return ConnsResult(
            clients=sum(share.clients for share in shares),
            ok=ok,
            failed=failed,
            connect_seconds=(max(lasts) - min(firsts)) / 1e9 if lasts else math.nan,
            rss_before=rss_before,
            rss_after=rss_after,
            pss_after=pss_after,
            entries=got["entries"],
            bad=got["bad"],
            samples=samples,
            usage=usage,
            log="\n".join(s for s in (stderr_of(p) for p in helpers) if s),
            by_process=by_process,
            helpers=len(shares),
            sources=len({share.source for share in shares}),
            request=request,
        )
    finally:
        for proc in helpers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def run_conns_hosts(
    exe: Path,
    hosts: Sequence[Endpoint],
    clients: int,
    workdir: Path,
    gets: int = 50,
    gets_seconds: float = 3.0,
    extra: Mapping[str, int] | None = None,
) -> ConnsResult:
    """``clients`` idle clients spread evenly over ``hosts``; ``GET`` timed on the last host.

    One helper per host, started one after the other (each holds its clients until
    the end): the first ones only connect, the last one connects its share and then
    times the ``GET``s, whose reply must list every client of every host. Connect
    time is the sum of the helpers' times; RSS and CPU are over every host's
    processes and ``extra`` (Redis), named ``h1``, ``h2``... in ``cores_by_process``.
    """
    servers = {f"h{k + 1}": pid for k, (_, _, pid) in enumerate(hosts)}
    servers.update(extra or {})
    procs, _ = server_tree(servers)
    rss_before = sum(settled_rss(host, port, pid) for host, port, pid in hosts)
    rss_before += total_rss(p for p in procs if p.pid in (extra or {}).values())
    shares = [clients // len(hosts) + (k < clients % len(hosts)) for k in range(len(hosts))]
    helpers: list[subprocess.Popen[bytes]] = []
    path = workdir / "samples-conns.bin"
    ok = failed = 0
    elapsed_ns = 0
    got: dict[str, int] = {}
    try:
        procs, names = server_tree(servers)
        meter = Meter(procs, [], names)  # each helper joins it as it starts
        usage = Usage()
        for k, ((host, port, _), share) in enumerate(zip(hosts, shares, strict=True)):
            last = k == len(hosts) - 1
            argv = [str(exe), "conns", host, str(port), str(share), str(CONNECT_WINDOW)]
            argv += [str(gets if last else 0), str(int(gets_seconds * 1e9)), str(path)]
            proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            helpers.append(proc)
            meter.load.append(psutil.Process(proc.pid))
            reader = LineReader(proc)
            deadline = time.monotonic() + 300 + REPLY_TIMEOUT
            _, elapsed, n_ok, n_failed = reader.line(deadline).split()
            if last:  # CPU over the connects, as in run_conns
                usage = meter.stop()
            elapsed_ns += int(elapsed)
            ok, failed = ok + int(n_ok), failed + int(n_failed)
            got = parse_fields(reader.line(deadline + gets_seconds))
            if reader.line(deadline) != "READY":
                raise RuntimeError("the load generator lost its step")
        procs, _ = server_tree(servers)
        rss_after, pss_after = total_rss(procs), total_pss(procs)
        for proc in helpers:
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(timeout=REPLY_TIMEOUT)
        samples = array.array("q", path.read_bytes())
        path.unlink()
        return ConnsResult(
            clients=clients,
            ok=ok,
            failed=failed,
            connect_seconds=elapsed_ns / 1e9,
            rss_before=rss_before,
            rss_after=rss_after,
            pss_after=pss_after,
            entries=got["entries"],
            bad=got["bad"],
            samples=samples,
            usage=usage,
            log="\n".join(s for s in (stderr_of(p) for p in helpers) if s),
        )
    finally:
        for proc in helpers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@dataclass(frozen=True)
class Share:
    """One conns helper of a fleet: how many clients it opens, and from which address."""

    clients: int
    source: str  # "-": the kernel's choice (127.0.0.1 for a server on 127.0.0.1)


def source_address(k: int) -> str:
    """The ``k``-th loopback source address: 127.0.0.2, 127.0.0.3, ... (all of 127/8 is
    local on Linux, so nothing needs configuring)."""
    if not 0 <= k < 254 * 256 * 256 - 1:
        raise ValueError(f"no loopback address number {k}")
    n = (127 << 24) + 2 + k
    return socket.inet_ntoa(n.to_bytes(4, "big"))


def plan_fleet(
    clients: int,
    procs: int = 1,
    sources: int = 0,
    per_proc: int = CONNS_PER_PROC,
    per_source: int = CONNS_PER_SOURCE,
) -> list[Share]:
    """Split ``clients`` over helper processes and loopback source addresses.

    At least ``procs`` processes, more if one would hold over ``per_proc``
    clients (its descriptors); clients as even as can be, the first processes
    one more. ``sources`` addresses (0: one per process, or none at all for a
    single process within ``per_source``), dealt to the processes in turn.
    ValueError when some address would carry over ``per_source`` clients.
    """
    if clients < 1 or procs < 1 or per_proc < 1 or sources < 0:
        raise ValueError("clients, processes and the per-process bound must be positive")
    procs = max(procs, -(-clients // per_proc))
    procs = min(procs, clients)
    counts = [clients // procs + (k < clients % procs) for k in range(procs)]
    if sources == 0 and procs == 1 and clients <= per_source:
        return [Share(clients, "-")]
    n = sources or procs
    names = [source_address(k) for k in range(n)]
    shares = [Share(c, names[k % n]) for k, c in enumerate(counts)]
    load: dict[str, int] = {}
    for share in shares:
        load[share.source] = load.get(share.source, 0) + share.clients
    over = {a: c for a, c in load.items() if c > per_source}
    if over:
        worst = max(over.values())
        raise ValueError(
            f"{worst:,} clients from one source address, over {per_source:,}: "
            f"use more source addresses (at least {-(-clients // per_source)})"
        )
    return shares


def raise_fd_limit(want: int) -> int:
    """Raise this process's open-file limit (children inherit it) towards ``want``; the result."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        soft = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft


def scratch() -> Path:
    """A private directory for the helper binary and sample files."""
    return Path(tempfile.mkdtemp(prefix="bench-"))
