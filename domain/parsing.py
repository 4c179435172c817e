"""Field parsing shared by every pipeline: timestamps and text, checked for what the servers
downstream refuse (no UTC equivalent, NUL, control characters, oversize) before they get there."""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Optional

from domain.errors import PermanentError, Reason, Stage

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class TimeRules:
    """Which moments are plausible: none before `earliest` (the system did not exist) and none
    more than `max_ahead` past the worker's clock (clock skew upstream is allowed for)."""

    earliest: datetime = datetime(2000, 1, 1, tzinfo=timezone.utc)
    max_ahead: timedelta = timedelta(days=1)


DEFAULT_TIME_RULES = TimeRules()

# C0 controls and DEL. Tab, line feed and carriage return are allowed in free text only.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_IN_FREE_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _invalid(reason: Reason, message: str) -> PermanentError:
    return PermanentError(Stage.VALIDATE, reason, message)


def _shown(value: Any, limit: int = 80) -> str:
    """A value for an error message: never the whole of a huge one."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def parse_timestamp(value: Any, field: str, *, rules: TimeRules = DEFAULT_TIME_RULES,
                    now: Optional[datetime] = None, epoch_millis: bool = True) -> datetime:
    """ISO-8601 with a UTC offset (or, when `epoch_millis`, an integer of epoch milliseconds),
    returned in UTC, within `rules`. Never raises anything but PermanentError."""
    if isinstance(value, bool):
        raise _invalid(Reason.INVALID_TIMESTAMP, f"{field} must not be a boolean")
    if isinstance(value, int) and epoch_millis:
        return from_epoch_millis(value, field, rules=rules, now=now)
    if not isinstance(value, str):
        raise _invalid(Reason.INVALID_TIMESTAMP, f"{field} must be an ISO-8601 string, got {type(value).__name__}")
    if len(value) > 64:
        raise _invalid(Reason.INVALID_TIMESTAMP, f"{field} {_shown(value)} is not a timestamp (too long)")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise _invalid(Reason.INVALID_TIMESTAMP, f"{field} {_shown(value)} is not a timestamp ({exc})") from None
    if moment.tzinfo is None:
        raise _invalid(Reason.INVALID_TIMESTAMP, f"{field} {_shown(value)} has no UTC offset")
    try:
        # 0001-01-01T00:00+01:00 and 9999-12-31T23:30-01:00 parse, but have no UTC equivalent.
        utc = moment.astimezone(timezone.utc)
    except (OverflowError, ValueError) as exc:
        raise _invalid(Reason.TIMESTAMP_OUT_OF_RANGE,
                       f"{field} {_shown(value)} cannot be expressed in UTC ({exc})") from None
    return check_plausible(utc, field, rules=rules, now=now)


def from_epoch_millis(value: int, field: str, *, rules: TimeRules = DEFAULT_TIME_RULES,
                      now: Optional[datetime] = None) -> datetime:
    """Epoch milliseconds (Avro timestamp-millis, or a plain long named a timestamp) in UTC."""
    try:
        moment = EPOCH + timedelta(milliseconds=value)
    except OverflowError:
        raise _invalid(Reason.TIMESTAMP_OUT_OF_RANGE,
                       f"{field} {_shown(value)} ms since the epoch is outside the calendar") from None
    return check_plausible(moment, field, rules=rules, now=now)


def check_plausible(moment: datetime, field: str, *, rules: TimeRules = DEFAULT_TIME_RULES,
                    now: Optional[datetime] = None) -> datetime:
    if moment < rules.earliest:
        raise _invalid(Reason.IMPLAUSIBLE_TIMESTAMP,
                       f"{field} {moment.isoformat()} is before {rules.earliest.isoformat()}")
    try:
        latest = (now or datetime.now(timezone.utc)) + rules.max_ahead
    except OverflowError:                    # a window that reaches past the calendar's end
        latest = datetime.max.replace(tzinfo=timezone.utc)
    if moment > latest:
        raise _invalid(Reason.IMPLAUSIBLE_TIMESTAMP,
                       f"{field} {moment.isoformat()} is more than {rules.max_ahead} ahead of the clock")
    return moment


def text(value: Any, field: str, *, max_length: int = 256, free: bool = False) -> str:
    """A string that PostgreSQL, the CQL server and a Kafka key all accept: no NUL, no control
    characters (tab and line breaks allowed in `free` text), at most `max_length` characters."""
    if not isinstance(value, str):
        raise _invalid(Reason.INVALID_FIELD, f"{field!r} must be a string, got {type(value).__name__}")
    if len(value) > max_length:
        raise _invalid(Reason.FIELD_TOO_LARGE,
                       f"{field!r} has {len(value)} characters, at most {max_length} are accepted")
    found = (_CONTROL_IN_FREE_TEXT if free else _CONTROL).search(value)
    if found:
        raise _invalid(Reason.CONTROL_CHARACTER,
                       f"{field!r} holds the control character U+{ord(found.group()):04X} at {found.start()}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:        # a lone surrogate: no database stores it
        raise _invalid(Reason.INVALID_FIELD, f"{field!r} is not valid Unicode ({exc.reason})") from None
    return value
