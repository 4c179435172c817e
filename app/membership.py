"""A group instance id in use by two workers: detected, said once, and reported by /ready and /health.

Kafka fences a static member whose group.instance.id another member took over. aiokafka 0.14
knows no FencedInstanceIdError: when two workers share an id, the broker drops one member's id
each time the other joins, and each of them logs, over and over, aiokafka's `Heartbeat failed:
local member_id was not recognized; resetting and re-joining group` (seen with two workers given
`APP_KAFKA_GROUP_INSTANCE_ID=worker-twin` on the local Kafka: 30 each in two minutes, commits
failing, every partition dealt again each time; tests/integration/test_restarts.py). One such
loss happens to any static member now and then (a session that expired); `FENCES` within
`FENCE_WINDOW_S` is the ping-pong. The worker then logs one error line naming the id, fails
/ready while the losses go on, and fails /health once they have gone on for
`APP_KAFKA_FENCED_HEALTH_S` (it cannot recover by itself: one of the two must get another id).
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Deque, Optional

log = logging.getLogger(__name__)

FENCES = 3                 # membership losses ...
FENCE_WINDOW_S = 120.0     # ... within this: another worker holds the same instance id
# aiokafka's own warnings when the broker no longer knows this member (heartbeat, commit, join),
# and what Kafka 4's FencedInstanceId (error 82, unknown to aiokafka 0.14) becomes in them.
LOSS_MARKERS = ("member_id was not recognized", "UnknownMemberIdError", "FencedInstanceId",
                "error_code=82", "UnknownError")
AIOKAFKA_LOGGERS = ("aiokafka.consumer.group_coordinator", "aiokafka.consumer.consumer")


class Fencing(logging.Handler):
    """Counts the losses of this member that aiokafka logs (from the consumer's own thread)."""

    def __init__(self, instance_id: str, health_after_s: float) -> None:
        super().__init__(level=logging.WARNING)
        self.instance_id, self.health_after_s = instance_id, health_after_s
        self._losses: Deque[float] = collections.deque(maxlen=64)
        self._since: Optional[float] = None        # when the current fenced spell began
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is not ours to report
            return
        if any(marker in message for marker in LOSS_MARKERS):
            self.lost(time.monotonic())

    def lost(self, now: float) -> None:
        with self._guard:
            self._losses.append(now)
            recent = [t for t in self._losses if now - t <= FENCE_WINDOW_S]
            if len(recent) >= FENCES and self._since is None:
                self._since = recent[0]
                log.error("APP_KAFKA_GROUP_INSTANCE_ID=%s is in use by another worker: the broker dropped this "
                          "member %d times in %.0f s (UnknownMemberId/FencedInstanceId); commits fail and the "
                          "partitions move back and forth until one of the two gets an id of its own. /ready "
                          "fails meanwhile, /health after %.0f s", self.instance_id, len(recent),
                          now - recent[0], self.health_after_s)

    def state(self, now: Optional[float] = None) -> tuple[bool, float]:
        """(fenced now, for how long in s). A spell ends after FENCE_WINDOW_S without a loss."""
        now = time.monotonic() if now is None else now
        with self._guard:
            if self._since is not None and (not self._losses or now - self._losses[-1] > FENCE_WINDOW_S):
                log.info("APP_KAFKA_GROUP_INSTANCE_ID=%s: no loss of the group membership for %.0f s, "
                         "no longer fenced", self.instance_id, FENCE_WINDOW_S)
                self._since = None
            return self._since is not None, (now - self._since if self._since is not None else 0.0)

    def readiness(self) -> tuple[bool, str]:
        fenced, for_s = self.state()
        if fenced:
            return False, (f"group instance id {self.instance_id!r} is in use by another worker "
                           f"(fenced for {for_s:.0f} s)")
        return True, f"static member {self.instance_id!r}"

    def liveness(self) -> tuple[bool, str]:
        fenced, for_s = self.state()
        if fenced and for_s >= self.health_after_s:
            return False, (f"group instance id {self.instance_id!r} in use by another worker for "
                           f"{for_s:.0f} s: give each worker its own APP_KAFKA_GROUP_INSTANCE_ID")
        return True, "ok"


def install(instance_id: str, health_after_s: float) -> Optional[Fencing]:
    """Watch aiokafka's log for losses of this member (static membership only); the App keeps
    what this returns (`app.fencing`)."""
    if not instance_id:
        return None
    fencing = Fencing(instance_id, health_after_s)
    for name in AIOKAFKA_LOGGERS:
        logging.getLogger(name).addHandler(fencing)
    return fencing
