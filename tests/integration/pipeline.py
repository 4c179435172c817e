"""Producing samples and reading every place an event can end up, for the pipeline tests."""
from __future__ import annotations

import base64
import collections
from typing import Any, Iterable, Optional

import orjson

from app.kafka_tools import message_counts, read_all
from devtools import kafka
from devtools.stores import cql_rows, enrichment_query_calls, seed_accounts  # noqa: F401 - the tests' helpers
from domain.errors import Reason
from app.commands.samples.transactions import Sample
from models.transaction import CATEGORIES


def expected_reason(sample: Sample, known_accounts: int) -> Optional[Reason]:
    """The reason the pipeline must give: the sample's own, or unknown_account."""
    if sample.expected_reason is not None:
        return sample.expected_reason
    return Reason.UNKNOWN_ACCOUNT if int(sample.key.decode()[4:]) >= known_accounts else None


async def produce(settings: Any, samples: Iterable[Sample], pace: Optional[tuple[int, float]] = None,
                  topic: Optional[str] = None) -> None:
    """Send samples keyed by account id; `pace=(n, s)` sleeps s seconds after every n."""
    await kafka.produce(settings.kafka_brokers, topic or settings.topic(settings.input_topics[0]),
                        ((s.key, s.value) for s in samples), pace=pace)


async def output_count(settings: Any) -> int:
    return sum((await message_counts(settings.kafka_brokers, kafka.output_topics(settings))).values())


async def forwarded(settings: Any) -> collections.Counter[str]:
    """How many times each event id is in the sink topics (checking its category's topic)."""
    seen: collections.Counter[str] = collections.Counter()
    for category in CATEGORIES:
        for record in await read_all(settings.kafka_brokers, settings.sink_topic(category)):
            body = orjson.loads(record.value)
            assert body["category"] == category
            assert record.key == body["account_id"].encode()
            assert dict(record.headers)["source-topic"].startswith(settings.topic_prefix.encode())
            seen[body["event_id"]] += 1
    return seen


async def dead_letter_topic(settings: Any) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in await read_all(settings.kafka_brokers,
                                                          settings.topic(settings.dlq_topic))]


def history_counts(settings: Any) -> tuple[collections.Counter[str], collections.Counter[str]]:
    """Rows per event id in history_by_event and in history_by_account."""
    by_event = collections.Counter(r.event_id for r in cql_rows(settings, "SELECT event_id FROM {ks}.history_by_event"))
    by_account = collections.Counter(r.event_id for r in cql_rows(
        settings, "SELECT event_id FROM {ks}.history_by_account"))
    return by_event, by_account


def stored_dead_letters(settings: Any) -> list[Any]:
    return cql_rows(settings, "SELECT * FROM {ks}.dead_letters")


def original_value(row: Any) -> bytes:
    return base64.b64decode(row.value_b64)


# Calls of the accounts enrichment query in this test's database (pg_stat_statements).
account_queries = enrichment_query_calls
