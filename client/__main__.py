"""``python -m client HOST PORT``: argv in, exit code out."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from client.app import Options, run
from wire.commands import NAME_MAX, valid_name

DESCRIPTION = """\
Terminal client for the one-to-one chat server (protocol v1, docs/PROTOCOL.md).

On a terminal it shows a prompt such as [7 FREE]> or [7 -> 3]> and prints
server lines above it. Type protocol lines as they are (GET, GET FREE,
CONNECT 3, #GOODBYE#, #CLOSE#) or the aliases /list, /free, /connect ID,
/ping, /bye, /quit, /help. In a session plain text goes to your partner;
//text sends a line starting with /.

When stdin is not a terminal (a pipe or a file) there is no prompt and no
colour: each stdin line is sent in order and each server line is printed on
one line of stdout (readable, or verbatim with --raw); the client's own notes
go to stderr. At the end of stdin the client sends #CLOSE# and waits for BYE.
"""

EPILOG = """\
exit status: 0 closed normally (BYE, Ctrl-C, Ctrl-D, end of stdin);
1 cannot connect (refused, unknown host, server full, a TLS certificate that
cannot be verified); 2 bad arguments;
3 the server went away (OUTAGE, or connection closed without BYE).
The NO_COLOR environment variable, when set and not empty, turns colours off.

example: printf 'GET\\n' | python -m client 127.0.0.1 5000 --raw
"""


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r} (1-65535)")
    return value


def _name(text: str) -> str:
    if not valid_name(text):
        raise argparse.ArgumentTypeError(
            f"not a name: {text!r} (1-{NAME_MAX} letters, digits, _ and -, not all digits)"
        )
    return text


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r} (0-3600)")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command line; ``--help`` documents every flag."""
    parser = argparse.ArgumentParser(
        prog="python -m client",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("host", help="server host name or address, e.g. 127.0.0.1")
    parser.add_argument("port", type=_port, help="server TCP port")
    parser.add_argument(
        "--raw", action="store_true", help="print server lines verbatim instead of readable form"
    )
    parser.add_argument(
        "--no-color", action="store_true", help="no colours on a terminal (as NO_COLOR=1 does)"
    )
    parser.add_argument(
        "--linger",
        type=_seconds,
        default=5.0,
        metavar="SECONDS",
        help="how long to wait for BYE after sending #CLOSE# at the end (default: 5)",
    )
    parser.add_argument(
        "--connect-timeout",
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help="give up connecting after this long (default: 10)",
    )
    parser.add_argument(
        "--name",
        type=_name,
        metavar="NAME",
        help="take this name once connected (NAME); others see it in /list and may /connect "
        "to it (default: none)",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="connect over TLS (the server's --tls-port), verifying its certificate against "
        "the system's CAs or --cafile",
    )
    parser.add_argument(
        "--cafile",
        metavar="FILE",
        help="with --tls: trust the CA certificates in FILE (PEM) instead of the system's",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="with --tls: do not verify the server's certificate (a warning says so)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, run the client, and return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.cafile or args.insecure) and not args.tls:
        parser.error("--cafile and --insecure need --tls")
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    options = Options(
        host=args.host,
        port=args.port,
        raw=args.raw,
        color=not args.no_color and not os.environ.get("NO_COLOR"),
        linger=args.linger,
        connect_timeout=args.connect_timeout,
        interactive=interactive,
        tls=args.tls,
        cafile=args.cafile,
        insecure=args.insecure,
        name=args.name or "",
    )
    try:
        return asyncio.run(run(options))
    except KeyboardInterrupt:  # Ctrl-C before the connection was up
        return 130


if __name__ == "__main__":
    sys.exit(main())
