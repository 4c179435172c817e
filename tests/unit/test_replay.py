"""app.replay: which dead letters a selection takes, and the HTTP parameters that make one."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import pytest

from app.replay import MAX_LIMIT, Selection, selection_from

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)


def row(reason: str = "unknown_account", stage: str = "enrich", failed_at: Any = None) -> Any:
    # the driver hands back naive UTC datetimes
    return SimpleNamespace(reason=reason, stage=stage, failed_at=failed_at or datetime(2026, 11, 22, 11, 0))


def test_defaults_are_the_last_24_hours() -> None:
    s = selection_from({}, NOW, default_limit=100)
    assert (s.since, s.until, s.limit) == (NOW - timedelta(hours=24), NOW, 100)
    # a row lives in its source event's day, which can precede its failure: one day more
    assert s.days == (date(2026, 11, 22), date(2026, 11, 21), date(2026, 11, 20))


def test_filters_on_reason_stage_and_time_of_failure() -> None:
    s = selection_from({"reason": "unknown_account", "stage": "enrich", "since": "2026-11-22T10:30:00Z",
                        "until": "2026-11-22T11:30:00+00:00", "limit": "5"}, NOW, default_limit=100)
    assert s.matches(row())
    assert not s.matches(row(reason="undecodable"))
    assert not s.matches(row(stage="decode"))
    assert not s.matches(row(failed_at=datetime(2026, 11, 22, 10, 0)))
    assert s.limit == 5 and s.days == (date(2026, 11, 22), date(2026, 11, 21))


def test_naive_timestamps_in_parameters_mean_utc() -> None:
    since = selection_from({"since": "2026-11-22T10:00:00"}, NOW, 1).since
    assert since == datetime(2026, 11, 22, 10, tzinfo=timezone.utc)


@pytest.mark.parametrize("params, message", [
    ({"reason": "nope"}, "reason 'nope' is not a known reason code"),
    ({"stage": "later"}, "stage 'later' is not one of"),
    ({"since": "yesterday"}, "since 'yesterday' is not an ISO-8601 timestamp"),
    ({"since": "2026-11-22T11:00:00Z", "until": "2026-11-22T10:00:00Z"}, "since must not be after until"),
    ({"since": "2026-01-01T00:00:00Z"}, "the window must not exceed 31 days"),
    ({"limit": "ten"}, "limit 'ten' is not an integer"),
    ({"limit": "0"}, f"limit must be between 1 and {MAX_LIMIT}"),
])
def test_bad_parameters_say_which(params: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError) as info:
        selection_from(params, NOW, default_limit=100)
    assert message in str(info.value)


def test_the_command_selection_reads_today_and_days_before() -> None:
    s = Selection.last_days(3, reason="undecodable", limit=10)
    today = datetime.now(timezone.utc).date()
    assert s.days == (today, today - timedelta(days=1), today - timedelta(days=2))
    assert s.matches(row(reason="undecodable", failed_at=datetime(2000, 1, 1)))    # no time filter
