"""How every process of the server logs: to stderr, as text lines or one JSON object a line.

``--log-format text`` (the default) is for people: time, pid, logger, level,
message. ``--log-format json`` is for log collectors: each record is one JSON
object on one line, with the process's name (``worker 1``) and whatever the
call passed as ``extra`` (a drop's reason, client and peer), so nothing has
to be parsed out of the message. No dependency: a ``logging.Formatter``.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

TEXT = "%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"
FORMATS = ("text", "json")

#: This process's name for the logs (``supervisor``, ``acceptor``, ``worker 1``).
title = "supervisor"

#: What every ``LogRecord`` has; the rest of its attributes came in ``extra``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (a traceback is a field, not more lines)."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "process": title,
            "pid": record.process,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in doc:
                doc[key] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return json.dumps(doc, default=str)


def setup(level: str, fmt: str = "text", name: str | None = None) -> None:
    """Log records of ``level`` and above to stderr in ``fmt``; ``name``: this process's."""
    global title
    if name is not None:
        title = name
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
