"""app/membership.py: a group instance id used by two workers, told from one lost membership."""
from __future__ import annotations

import logging

import pytest

from app.membership import FENCE_WINDOW_S, FENCES, Fencing

AIOKAFKA_LOSS = "Heartbeat failed: local member_id was not recognized; resetting and re-joining group"


def test_one_lost_membership_is_no_twin_but_a_ping_pong_is(caplog: pytest.LogCaptureFixture) -> None:
    f = Fencing("worker-1", health_after_s=300)
    for t in range(FENCES - 1):
        f.lost(100.0 + t)
    assert f.state(110.0) == (False, 0.0) and f.readiness()[0]
    with caplog.at_level(logging.ERROR, logger="app.membership"):
        f.lost(110.0)
        f.lost(111.0)
    assert f.state(112.0) == (True, 12.0)
    assert [r.getMessage() for r in caplog.records if "is in use by another worker" in r.getMessage()] \
        and len(caplog.records) == 1, "one line per fenced spell"


def test_losses_further_apart_than_the_window_never_add_up() -> None:
    f = Fencing("worker-1", health_after_s=300)
    for n in range(FENCES * 2):
        f.lost(n * (FENCE_WINDOW_S / (FENCES - 1) + 1))
    assert not f.state(FENCES * 2 * FENCE_WINDOW_S)[0]


def test_health_fails_only_once_the_spell_outlasts_its_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr("app.membership.time.monotonic", lambda: now[0])
    f = Fencing("worker-1", health_after_s=60)
    for t in range(FENCES):
        f.lost(1000.0 + t)
    now[0] = 1030.0
    assert not f.readiness()[0] and f.liveness()[0]
    f.lost(1030.0)
    now[0] = 1065.0
    assert not f.liveness()[0] and "APP_KAFKA_GROUP_INSTANCE_ID" in f.liveness()[1]
    now[0] = 1030.0 + FENCE_WINDOW_S + 1          # no loss for a whole window: the spell is over
    assert f.readiness()[0] and f.liveness()[0]


def test_aiokafka_s_own_warning_counts() -> None:
    f = Fencing("worker-1", health_after_s=300)
    record = logging.LogRecord("aiokafka.consumer.group_coordinator", logging.WARNING, __file__, 1,
                               AIOKAFKA_LOSS, None, None)
    for _ in range(FENCES):
        f.emit(record)
    assert f.state()[0]
    other = Fencing("worker-1", health_after_s=300)
    for _ in range(FENCES):
        other.emit(logging.LogRecord("aiokafka.consumer.group_coordinator", logging.WARNING, __file__, 1,
                                     "Heartbeat failed for group g because it is rebalancing", None, None))
    assert not other.state()[0]
