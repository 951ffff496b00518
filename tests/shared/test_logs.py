"""``KYC_LOG_FORMAT=json``: every line parses, and no features string or image reaches it."""

from __future__ import annotations

import io
import json
import logging

from shared import logs
from shared.config import Settings
from tests.conftest import FACES_DIR, need

# A real features string's shape: base64 of b"KF\x01" + model id + a float32 vector.
FEATURES = "S0YBCmZyX2ZlYXR1cmUAAg" + "A" * 2728


def capture(settings: Settings) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    logger = logging.getLogger(f"test-logs-{settings.log_format}")
    logger.handlers[:] = [logging.StreamHandler(stream)]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logs.apply(settings, logger)
    return logger, stream


def test_json_lines_parse_and_carry_no_features() -> None:
    logger, stream = capture(Settings(log_format="json"))
    logger.info("job %s succeeded compute_s=%.6f", "j-1", 0.0123)
    logger.warning("bad request: features1=%s", FEATURES)
    try:
        raise ValueError(FEATURES)
    except ValueError:
        logger.exception("handler failed")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["level"] for line in lines] == ["INFO", "WARNING", "ERROR"]
    assert lines[0]["message"] == "job j-1 succeeded compute_s=0.012300"
    assert lines[2]["exc_type"] == "ValueError"
    assert set(lines[0]) >= {"ts", "level", "logger", "message", "process"}
    assert FEATURES[:40] not in stream.getvalue() and logs.REDACTED in lines[1]["message"]


def test_text_logs_are_redacted_too() -> None:
    need(FACES_DIR.is_dir(), f"face photos not found at {FACES_DIR}")
    import base64

    image = base64.b64encode((FACES_DIR / "fr_obama.jpg").read_bytes()[:3000]).decode()
    logger, stream = capture(Settings(log_format="text"))
    logger.info("body %s", image)
    assert image[:200] not in stream.getvalue() and logs.REDACTED in stream.getvalue()


def test_the_api_log_config_is_json_only_when_asked() -> None:
    import logging.config

    assert logs.uvicorn_log_config(Settings(log_format="text")) is None
    config = logs.uvicorn_log_config(Settings(log_format="json"))
    assert config is not None
    logging.config.dictConfig({**config, "root": {"handlers": [], "level": "WARNING"}})
    try:
        handler = logging.getLogger("uvicorn").handlers[0]
        assert isinstance(handler.formatter, logs.JsonFormatter)
    finally:
        for name in ("uvicorn", "uvicorn.access"):
            logging.getLogger(name).handlers.clear()
            logging.getLogger(name).propagate = True
