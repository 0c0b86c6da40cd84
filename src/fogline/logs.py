"""Structured log lines: `time level logger event key=value ...`.

Call sites log an event name and put their data in `extra={"fields": {...}}`. Values are
never secrets: passwords, API keys and URLs with credentials are not passed to the logger.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        parts = [
            f"{stamp}.{int(record.msecs):03d}Z",
            record.levelname.lower(),
            record.name,
            record.getMessage(),
        ]
        fields: dict[str, Any] = getattr(record, "fields", {}) or {}
        for key, value in fields.items():
            text = str(value)
            parts.append(f"{key}={text!r}" if " " in text or not text else f"{key}={text}")
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access", "nats", "paho"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
