"""The account cache's change feed for one test database: its own Debezium connector, slot and
topic prefix, registered on the stack's Kafka Connect and removed (slot dropped) afterwards, so
that slots do not pile up in the shared PostgreSQL (each one keeps WAL while it exists)."""
from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg

from app.adapters.connect import Connect, connector_config


def names(settings: Any) -> tuple[str, str]:
    """(connector, slot) of the settings' database: one each per database."""
    database = settings.postgres_dsn.rsplit("/", 1)[1]
    return f"accounts-cdc-{database}", f"txpipe_{database}".lower()[:63]


async def register(settings: Any, timeout_s: float = 90.0) -> str:
    """Register the connector of the settings' database (migrated: the publication exists) and
    wait until it runs; its name."""
    connector, slot = names(settings)
    async with Connect(settings.connect_url) as connect:
        await connect.register(connector, connector_config(settings, slot=slot), timeout_s)
    return connector


async def unregister(settings: Any, timeout_s: float = 30.0) -> None:
    """Delete the connector and drop its replication slot (once the connector let go of it)."""
    connector, slot = names(settings)
    async with Connect(settings.connect_url) as connect:
        await connect.delete(connector)
    conn = await asyncpg.connect(settings.postgres_dsn)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            row = await conn.fetchrow("SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1", slot)
            if row is None:
                return
            if row["active_pid"] is None:
                await conn.execute("SELECT pg_drop_replication_slot($1)", slot)
                return
            if time.monotonic() > deadline:     # the task did not stop: end its walsender
                await conn.execute("SELECT pg_terminate_backend($1)", row["active_pid"])
            await asyncio.sleep(0.5)
    finally:
        await conn.close()


async def pause(settings: Any) -> None:
    async with Connect(settings.connect_url) as connect:
        await connect.pause(names(settings)[0])


async def resume(settings: Any) -> None:
    connector = names(settings)[0]
    async with Connect(settings.connect_url) as connect:
        await connect.resume(connector)
        await connect.wait_running(connector)
