"""Log lines as text or JSON, at the level from settings; lines about an event carry its position.

The worker CLI (mode) configures logging from the app's `logging_config` setting, which
`logging_config()` builds. Log calls about one event pass `extra=event_fields(...)`; both
formatters then show event_id, topic, partition and offset.
"""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any, Mapping, Optional

import orjson

from app.settings import Settings

EVENT_FIELDS = ("event_id", "topic", "partition", "offset")

# What the Cassandra driver (scylla-driver, pinned in requirements.lock) logs while a CQL server
# is away and when it is back, by logger and message template: with its reconnection policy of
# one attempt a second, a 15 s outage made 59 warnings with a full traceback each and 14 more
# lines (608 lines in all; 1,900 for a 50 s outage in issue 13). The app logs the two state
# changes itself (app/retry.py: "unavailable, retrying", "available again"), so these are debug.
DRIVER_NOISE: Mapping[str, frozenset[str]] = {
    "cassandra.cluster": frozenset({
        "[control connection] Error connecting to %s:",
        "Control connection failed to connect, shutting down Cluster:",
        "Host %s has been marked down",
        "Host %s may be up; will prepare queries and open connection pool",
        "Connection pools established for node %s",
    }),
    "cassandra.pool": frozenset({
        "Error attempting to reconnect to %s, scheduling retry in %s seconds: %s",
        "Successful reconnection to %s, marking node up if it isn't already",
    }),
}
# What a LogRecord has before any `extra=`; everything else a caller added is kept.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "color_message"}


def event_fields(topic: str, partition: int, offset: int, event_id: Optional[str] = None) -> dict[str, Any]:
    """`extra=` for a log call about one event (its id when known, and where it was read)."""
    return {"event_id": event_id, "topic": topic, "partition": partition, "offset": offset}


class DriverNoise(logging.Filter):
    """Turns the driver's outage and reconnection lines (DRIVER_NOISE) into debug records:
    shown, traceback and all, only when the log level is debug."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.DEBUG and record.msg in DRIVER_NOISE.get(record.name, ()):
            if not logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
                return False
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO-8601), level, logger, message, the extras."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    """faust's usual layout, plus `[event_id=... topic/partition@offset]` on lines about an event."""

    def __init__(self) -> None:
        super().__init__("[%(asctime)s] [%(process)s] [%(levelname)s]: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        topic = getattr(record, "topic", None)
        if topic is not None:
            text += (f" [event_id={getattr(record, 'event_id', None)} "
                     f"{topic}/{getattr(record, 'partition', '?')}@{getattr(record, 'offset', '?')}]")
        return text


def logging_config(settings: Settings) -> dict[str, Any]:
    """dictConfig for the worker: one stdout handler, the chosen format, the level from settings."""
    formatter = "app.logs.JsonFormatter" if settings.log_format == "json" else "app.logs.TextFormatter"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"app": {"()": formatter}},
        "handlers": {"stdout": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout",
                                "formatter": "app"}},
        "root": {"level": settings.log_level.upper(), "handlers": ["stdout"]},
        # On the loggers themselves (a logger's filters see only its own records), so that the
        # driver's records are demoted whatever handler receives them.
        "filters": {"driver_noise": {"()": "app.logs.DriverNoise"}},
        "loggers": {name: {"filters": ["driver_noise"]} for name in DRIVER_NOISE},
    }


def apply_level(settings: Settings) -> None:
    """Make the level from settings the one that counts, whatever `-l` the worker got.

    With `-l warning` or above (faust's default is WARN), faust's worker adds a terminal
    spinner handler and sets the ROOT logger to DEBUG (faust/worker.py,
    `_setup_spinner_handler`), so every `log.debug()` in faust and aiokafka builds a
    record that the handlers then drop: a measurable share of the per-event CPU. The
    spinner also sets our handler to the `-l` level. Undo both.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if type(handler).__name__ == "SpinnerHandler":
            root.removeHandler(handler)
        else:
            handler.setLevel(logging.NOTSET)
    root.setLevel(settings.log_level.upper())
