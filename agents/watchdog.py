"""Every few seconds, rewind stream partitions whose commit point is stuck (app/stalls.py
explains the faust-streaming hole this cures)."""
from __future__ import annotations

from app import stalls
from app.main import app, settings

if settings.stall_check_s > 0:
    @app.timer(interval=min(5.0, max(1.0, settings.stall_check_s / 4)))
    async def unstick_partitions() -> None:
        await stalls.check(app, settings.stall_check_s)
