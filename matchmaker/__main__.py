"""``python -m matchmaker``: parse the flags, run the supervisor, exit with its status."""

from __future__ import annotations

import sys

import setproctitle

from matchmaker.config import parse_args
from matchmaker.supervisor import run


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    setproctitle.setproctitle("matchmaker: supervisor")
    try:
        return run(config)
    except OSError as exc:
        ports = [config.port, config.tls_port, config.legacy_port]
        where = " or ".join(f"{config.host}:{p}" for p in ports if p is not None)
        print(f"matchmaker: cannot listen on {where}: {exc.strerror}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
