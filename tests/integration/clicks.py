"""Producing clicks and reading where they end up (CQL tables, dead letters), for the Avro tests."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Optional

import orjson

from app.kafka_security import aiokafka_auth
from app.kafka_tools import message_counts, read_all
from devtools import kafka, stores
from devtools.processes import wait_until

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def millis(moment: datetime) -> int:
    if moment.tzinfo is None:          # the CQL driver returns naive UTC datetimes
        moment = moment.replace(tzinfo=timezone.utc)
    return (moment - EPOCH) // timedelta(milliseconds=1)


async def produce(settings: Any, records: Iterable[tuple[Optional[bytes], Optional[bytes]]]) -> None:
    await kafka.produce(settings.kafka_brokers, settings.topic(settings.clicks_topic), records,
                        **aiokafka_auth(settings))


def cql_rows(settings: Any, query: str) -> list[Any]:
    try:
        return stores.cql_rows(settings, query)
    except Exception as exc:  # noqa: BLE001 - the keyspace/table may not exist yet while waiting
        if "does not exist" in str(exc) or "unconfigured table" in str(exc):
            return []
        raise


def history(settings: Any) -> list[Any]:
    return cql_rows(settings, "SELECT user_id, clicked_at, url, schema_id, source_topic"
                              " FROM {ks}.clicks_by_user")


def url_counts(settings: Any) -> dict[str, int]:
    return {r.url: r.clicks for r in cql_rows(settings, "SELECT url, clicks FROM {ks}.clicks_per_url")}


async def dead_letters(settings: Any) -> list[dict[str, Any]]:
    dlq = settings.topic(settings.dlq_topic)
    if not (await message_counts(settings.kafka_brokers, [dlq]))[dlq]:
        return []
    return [orjson.loads(r.value) for r in await read_all(settings.kafka_brokers, dlq)]


def key_of(datum: dict[str, Any]) -> tuple[str, int, str]:
    return datum["user_id"], millis(datum["timestamp"]), datum["url"]


async def wait_for_history(settings: Any, expected: int, timeout: float = 90) -> None:
    async def enough() -> bool:
        return len(history(settings)) >= expected
    await wait_until(enough, timeout, f"{expected} rows in clicks_by_user")
