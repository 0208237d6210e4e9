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
        print(
            f"matchmaker: cannot listen on {config.host}:{config.port}: {exc.strerror}",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
