"""app.logs: JSON and text lines, event fields, and the level from settings winning over `-l`."""
from __future__ import annotations

import io
import logging
import logging.config
import sys
from typing import Iterator

import orjson
import pytest

from app.logs import JsonFormatter, TextFormatter, apply_level, event_fields, logging_config
from app.settings import Settings


def record(extra: dict | None = None, exc: bool = False) -> logging.LogRecord:
    info = None
    if exc:
        try:
            raise ValueError("bad")
        except ValueError:
            info = sys.exc_info()
    rec = logging.LogRecord("agents.transactions", logging.WARNING, __file__, 1, "dead letter %s", ("x",), info)
    for key, value in (extra or {}).items():
        setattr(rec, key, value)
    return rec


def test_json_lines_carry_the_event_fields() -> None:
    line = orjson.loads(JsonFormatter().format(record(event_fields("t.raw", 3, 41, "ev-1"))))
    assert line["message"] == "dead letter x" and line["level"] == "warning"
    assert line["logger"] == "agents.transactions" and line["time"].endswith("+00:00")
    assert (line["event_id"], line["topic"], line["partition"], line["offset"]) == ("ev-1", "t.raw", 3, 41)


def test_json_lines_hold_exceptions_and_odd_values_on_one_line() -> None:
    text = JsonFormatter().format(record({"when": object()}, exc=True))
    assert "\n" not in text
    line = orjson.loads(text)
    assert "ValueError: bad" in line["exception"] and line["when"].startswith("<object")


def test_text_lines_end_with_the_event_position() -> None:
    text = TextFormatter().format(record(event_fields("t.raw", 3, 41, "ev-1")))
    assert text.endswith("dead letter x [event_id=ev-1 t.raw/3@41]")
    assert "[event_id" not in TextFormatter().format(record())


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    yield root
    root.handlers[:] = saved[1]
    root.setLevel(saved[0])


def test_the_worker_config_installs_the_chosen_format(root_logger: logging.Logger) -> None:
    config = logging_config(Settings.load({"APP_LOG_FORMAT": "json", "APP_LOG_LEVEL": "warning"}))
    logging.config.dictConfig(config)
    handler = root_logger.handlers[0]
    assert isinstance(handler.formatter, JsonFormatter) and root_logger.level == logging.WARNING


def test_apply_level_undoes_the_spinner_trap(root_logger: logging.Logger) -> None:
    """faust's worker, given `-l warning`, sets the ROOT logger to DEBUG and adds a spinner
    handler (faust/worker.py _setup_spinner_handler): every debug() call then builds a record."""
    class SpinnerHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None: ...

    stream = io.StringIO()
    ours = logging.StreamHandler(stream)
    ours.setLevel(logging.WARNING)                    # what the spinner setup does to handler 0
    root_logger.handlers[:] = [ours, SpinnerHandler(level=logging.DEBUG)]
    root_logger.setLevel(logging.DEBUG)
    apply_level(Settings.load({"APP_LOG_LEVEL": "info"}))
    assert root_logger.level == logging.INFO
    assert root_logger.handlers == [ours] and ours.level == logging.NOTSET
    assert not logging.getLogger("aiokafka").isEnabledFor(logging.DEBUG)
    logging.getLogger("x").info("shown")
    assert "shown" in stream.getvalue()
