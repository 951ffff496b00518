"""Log output: plain text, or one JSON object per line (``KYC_LOG_FORMAT=json``) for a log pipeline.

Neither carries biometric data: our messages name jobs, stages and codes, never inputs or
results, and as a second guard every line passes :func:`redact`, which replaces anything shaped
like a features string or a long base64 run (an image, a vector) before it is written.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

from shared.config import Settings

# A features string is base64 of b"KF\x01...", so it starts "S0YB"; other long base64 runs are
# images or vectors pasted by a caller.
_BIOMETRIC = re.compile(r"S0YB[A-Za-z0-9+/]{16,}={0,2}|[A-Za-z0-9+/]{120,}={0,2}")
REDACTED = "[redacted]"


def redact(text: str) -> str:
    """``text`` with every features-like or long base64 run replaced by ``[redacted]``."""
    return _BIOMETRIC.sub(REDACTED, text)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``ts``, ``level``, ``logger``, ``message`` (and ``exc_type``,
    ``process``). A traceback's text is left out: it may quote a local variable's value."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
            "process": record.process,
        }
        if record.exc_info and record.exc_info[0] is not None:
            line["exc_type"] = record.exc_info[0].__name__
        return json.dumps(line, ensure_ascii=False)


class RedactingFormatter(logging.Formatter):
    """The plain-text format, through :func:`redact`."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def formatter(settings: Settings, text_format: str | None = None) -> logging.Formatter:
    """The formatter ``KYC_LOG_FORMAT`` asks for (``text_format``: the text layout to keep)."""
    if settings.log_format == "json":
        return JsonFormatter()
    return RedactingFormatter(text_format)


def apply(settings: Settings, logger: logging.Logger | None = None) -> None:
    """Give every handler of ``logger`` (default: the root logger) the configured formatter,
    keeping a text handler's own layout."""
    for handler in (logger or logging.getLogger()).handlers:
        current = handler.formatter._fmt if handler.formatter is not None else None
        handler.setFormatter(formatter(settings, current))


def uvicorn_log_config(settings: Settings) -> dict[str, Any] | None:
    """uvicorn's ``log_config`` for ``KYC_LOG_FORMAT=json`` (None: uvicorn's own text format)."""
    if settings.log_format != "json":
        return None
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {"default": handler},
        "root": {"handlers": ["default"], "level": "INFO"},
        "loggers": {name: {"handlers": ["default"], "propagate": False} for name in ("uvicorn", "uvicorn.access")},
    }
