"""Structured logging for every service: one JSON object per line on stderr.

Services log events, not sentences: the message is a short event name and the details are
fields, passed as `extra`::

    log = logging.getLogger("iconicity.scorer")
    log.info("serving", extra={"port": 50053})
    # {"ts": "2025-01-01T12:00:00.000Z", "level": "info", "logger": "iconicity.scorer",
    #  "event": "serving", "port": 50053}

>>> import io, json
>>> stream = io.StringIO()
>>> configure_logging("INFO", stream=stream)
>>> logging.getLogger("iconicity.doctest").info("serving", extra={"port": 1234})
>>> record = json.loads(stream.getvalue())
>>> record["event"], record["port"], record["level"]
('serving', 1234, 'info')
>>> reset_logging()
"""

from __future__ import annotations

import json as _json  # `configure_logging(json=...)` takes the name
import logging
import sys
import time
from typing import IO, Any

# Attributes every LogRecord has; anything else on a record came from `extra`.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}

# Marks the handler `configure_logging` installs, so that calling it again replaces it.
_HANDLER_NAME = "iconicity-structured"


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object: ts, level, logger, event, the `extra` fields,
    and `exception` with the traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _utc_timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return _json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """Human-readable lines for a terminal: `time level logger event key=value ...`."""

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(
            f"{key}={value}" for key, value in vars(record).items()
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_")
        )
        line = f"{_utc_timestamp(record.created)} {record.levelname:<7} {record.name} {record.getMessage()}"
        if fields:
            line = f"{line} {fields}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line


def configure_logging(level: str | int = "INFO", json: bool = True, stream: IO[str] | None = None) -> None:
    """Sends the root logger's records to `stream` (stderr by default), as JSON lines or as
    text, at `level`. Calling it again replaces the handler it installed before."""
    root = logging.getLogger()
    reset_logging()
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter() if json else TextFormatter())
    root.addHandler(handler)
    root.setLevel(_level(level))
    logging.captureWarnings(True)


def reset_logging() -> None:
    """Removes the handler `configure_logging` installed."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == _HANDLER_NAME:
            root.removeHandler(handler)
            handler.close()


def _level(level: str | int) -> int:
    if isinstance(level, int):
        return level
    value = logging.getLevelName(level.upper())
    if not isinstance(value, int):
        raise ValueError(f"unknown log level {level!r}; use DEBUG, INFO, WARNING or ERROR")  # noqa: TRY004
    return value


def _utc_timestamp(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int((created % 1) * 1000):03d}Z"
