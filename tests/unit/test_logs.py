"""app.logs: JSON and text lines, event fields, and the level from settings winning over `-l`."""
from __future__ import annotations

import io
import logging
import logging.config
import sys
from typing import Iterator

import orjson
import pytest

from app.logs import DRIVER_NOISE, JsonFormatter, TextFormatter, apply_level, event_fields, logging_config
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


# --- the Cassandra driver's outage noise (issue 13) -----------------------------------------

def test_every_demoted_line_is_one_the_installed_driver_logs() -> None:
    """The templates are matched exactly: a driver upgrade that rewords one fails here."""
    import re
    from pathlib import Path

    import cassandra

    for logger_name, templates in DRIVER_NOISE.items():
        # The driver's .py sources ship beside its compiled modules; literals split over
        # lines are joined.
        source = (Path(cassandra.__file__).parent / (logger_name.split(".")[1] + ".py")).read_text()
        source = re.sub(r"\"\s*\n\s*\"", "", source)
        for template in templates:
            assert f'"{template}"' in source, (logger_name, template)


@pytest.fixture
def driver_logs(root_logger: logging.Logger) -> Iterator[io.StringIO]:
    """The worker's logging config, writing to a buffer."""
    logging.config.dictConfig(logging_config(Settings.load({})))
    stream = io.StringIO()
    root_logger.handlers[0].setStream(stream)  # type: ignore[attr-defined]
    yield stream
    for name in DRIVER_NOISE:
        logging.getLogger(name).filters.clear()


def outage(seconds: int) -> None:
    """What the driver logs for an outage of `seconds` (one reconnection attempt a second)."""
    cluster, pool = logging.getLogger("cassandra.cluster"), logging.getLogger("cassandra.pool")
    cluster.warning("Host %s has been marked down", "127.0.0.1:19042")
    for _ in range(seconds):
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except ConnectionRefusedError:
            cluster.warning("[control connection] Error connecting to %s:", "127.0.0.1:19042", exc_info=True)
        pool.warning("Error attempting to reconnect to %s, scheduling retry in %s seconds: %s",
                     "127.0.0.1:19042", 1.0, "[Errno 111] Connection refused")
    pool.info("Successful reconnection to %s, marking node up if it isn't already", "127.0.0.1:19042")
    cluster.info("Host %s may be up; will prepare queries and open connection pool", "127.0.0.1:19042")
    cluster.info("Connection pools established for node %s", "127.0.0.1:19042")


def test_a_cql_outage_adds_no_driver_line_at_info(driver_logs: io.StringIO) -> None:
    outage(50)
    logging.getLogger("app.retry").warning("cql unavailable, retrying with backoff: %s", "NoHostAvailable")
    logging.getLogger("app.retry").warning("cql available again after 50.0s and 12 retries")
    assert driver_logs.getvalue().count("\n") == 2, driver_logs.getvalue()


def test_the_driver_lines_show_at_debug_level_as_debug(driver_logs: io.StringIO) -> None:
    logging.getLogger().setLevel(logging.DEBUG)
    outage(1)
    lines = [line for line in driver_logs.getvalue().splitlines() if line.startswith("[")]
    assert len(lines) == 6 and all("[DEBUG]" in line for line in lines)
    assert "ConnectionRefusedError" in driver_logs.getvalue()        # the traceback is kept


def test_other_driver_warnings_are_left_alone(driver_logs: io.StringIO) -> None:
    logging.getLogger("cassandra.cluster").warning("[session] Connected hosts in the %s are reporting a "
                                                   "schema disagreement: %s", "cluster", "{}")
    assert "[WARNING]: [session] Connected hosts" in driver_logs.getvalue()
