"""Liveness and readiness of a worker, as /health and /ready report them."""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from app import metrics, retry
from app.batching import summary
from app.memo import Memo
from app.settings import Settings

CHECK_TIMEOUT_S = 2.0     # each server must answer within this
CACHE_S = 2.0             # probes and scrapes within this share one round of checks


@dataclass(frozen=True)
class Readiness:
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)   # name -> {"ok": bool, "detail": str}

    @property
    def ready(self) -> bool:
        return all(check["ok"] for check in self.checks.values())

    def asdict(self) -> dict[str, Any]:
        return {"ready": self.ready, "checks": self.checks}


class Health:
    """What /health and /ready answer, from the App's state and its resources' servers."""

    def __init__(self, app: Any, settings: Settings, resources: Any) -> None:
        self.app = app
        self.settings = settings
        self.resources = resources
        # Run the checks, or share the round started less than CACHE_S ago (or still running).
        self.readiness = Memo(self._check, CACHE_S)

    def alive(self) -> tuple[bool, str]:
        """Liveness: the event loop answers (else no response at all) and the app has not
        crashed or begun to stop. A failure here means: restart the process."""
        app, progress = self.app, self.resources.progress
        if app.crashed:
            return False, f"crashed: {app.crash_reason!r}"
        if progress.dead:
            return False, "agent died: " + "; ".join(f"{agent}: {why}" for agent, why in sorted(progress.dead.items()))
        if app.should_stop:
            return False, "stopping"
        if app.fencing is not None:
            return app.fencing.liveness()
        return True, "ok"

    def _membership(self) -> dict[str, tuple[bool, str]]:
        """With a group instance id: not shared with another worker (app/membership.py)."""
        fencing = self.app.fencing
        return {} if fencing is None else {"group_membership": fencing.readiness()}

    def _partitions(self) -> tuple[bool, str]:
        app = self.app
        if app.rebalancing:
            return False, "rebalance in progress"
        try:
            assigned = app.consumer.assignment()
        except Exception as exc:  # noqa: BLE001 - consumer not started yet
            return False, f"consumer not started ({type(exc).__name__})"
        if not assigned:
            return False, "no partitions assigned yet"
        changelogs = [tp for tp in assigned if tp.topic.endswith("-changelog")]
        return True, f"{len(assigned)} partitions ({len(changelogs)} of table changelogs)"

    def _recovery(self) -> tuple[bool, str]:
        if self.app.in_recovery:
            return False, "recovering tables from their changelogs"
        if not self.app.tables.recovery.completed.is_set():
            return False, "table recovery has not completed yet"
        return True, "tables recovered"

    def _batches(self) -> tuple[bool, str]:
        """A batch unfinished for longer than APP_BATCH_STUCK_S: named, with the outage if any."""
        progress, stuck_s = self.resources.progress, self.settings.batch_stuck_s
        stuck = progress.stuck(stuck_s)
        if stuck:
            return False, summary(stuck, retry.current_outages())
        unfinished = progress.unfinished()
        oldest = f"; oldest unfinished {unfinished[0].age_s:.1f}s" if unfinished else ""
        return True, f"no batch unfinished for more than {stuck_s:.0f}s{oldest}"

    def _cache_changes(self) -> tuple[bool, str]:
        """How fresh the account cache is with the change feed on: the lag of the last change
        applied, how long ago, and the WAL the connector's slot retains (grows while it is down)."""
        last, limit = metrics.cache_change_last, self.settings.cache_changes_fresh_s
        retained = metrics.cache_slot_sample.get("retained")
        slot = (f"slot {self.settings.cache_changes_slot}: not sampled yet" if retained is None
                else f"slot {self.settings.cache_changes_slot} retains {retained} bytes of WAL" if retained >= 0
                else f"no replication slot {self.settings.cache_changes_slot}")
        if not last:
            return True, f"no change applied yet; {slot}"
        age = time.time() - last["applied_at"]
        detail = f"last change applied {age:.1f}s ago with a lag of {last['lag_s']:.3f}s; {slot}"
        if last["lag_s"] > limit:
            return False, f"stale: {detail} (more than {limit:.0f}s)"
        if retained is not None and retained > self.settings.cache_changes_max_retained_bytes:
            return False, f"feed stalled: {detail} (more than {self.settings.cache_changes_max_retained_bytes})"
        return True, detail

    async def _check(self) -> Readiness:
        resources = self.resources
        servers = await asyncio.gather(
            _reachable(lambda: resources.postgres.ping(CHECK_TIMEOUT_S)),
            _reachable(lambda: resources.cql.execute("SELECT release_version FROM system.local")),
            _reachable(resources.registry.ping),
        )
        results = {"partitions_assigned": self._partitions(), **self._membership(),
                   "tables_recovered": self._recovery(),
                   "batches": self._batches(),
                   "postgres": servers[0], "cql": servers[1], "schema_registry": servers[2]}
        if self.settings.cache_changes:
            results["cache_changes"] = self._cache_changes()
        readiness = Readiness({name: {"ok": ok, "detail": detail} for name, (ok, detail) in results.items()})
        metrics.ready.set(1 if readiness.ready else 0)
        for name, check in readiness.checks.items():
            metrics.ready_check.labels(name).set(1 if check["ok"] else 0)
        return readiness


async def _reachable(call: Callable[[], Awaitable[Any]]) -> tuple[bool, str]:
    try:
        await asyncio.wait_for(call(), CHECK_TIMEOUT_S)
    except asyncio.TimeoutError:
        return False, f"no answer within {CHECK_TIMEOUT_S}s"
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"; say which
        return False, f"{type(exc).__name__}: {exc}"[:300]
    return True, "reachable"
