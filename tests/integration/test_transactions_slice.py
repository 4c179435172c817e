"""The first slice end to end: raw events in, one copy of each good event in its category's
sink topic, each bad one in the dead-letter topic with the right reason."""
from __future__ import annotations

import base64
import collections
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from app.kafka_tools import bootstrap, message_counts, read_all
from domain.samples import samples
from tests.integration.support import wait_until


def test_worker_forwards_and_dead_letters(workers: Any, settings: Any, event_loop_run: Any) -> None:
    data = samples(600, bad_ratio=0.1, seed=7)
    good = {s.event_id: s for s in data if s.expected_reason is None}
    bad = {s.event_id: s for s in data if s.expected_reason is not None}
    assert good and bad

    worker = workers().start()
    brokers = settings.kafka_brokers
    sink_names = {c: settings.sink_topic(c) for c in ("payment", "receipt", "refund")}
    dlq = settings.topic(settings.dlq_topic)
    source = settings.topic(settings.input_topics[0])

    async def scenario() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap(brokers), acks="all")
        await producer.start()
        try:
            for s in data:
                await producer.send(source, s.value, key=s.key)
        finally:
            await producer.stop()

        async def all_out() -> bool:
            counts = await message_counts(brokers, [*sink_names.values(), dlq])
            return sum(counts.values()) >= len(data)

        await wait_until(all_out, 60, "every event forwarded or dead-lettered")

        seen: collections.Counter[str] = collections.Counter()
        for category, name in sink_names.items():
            for record in await read_all(brokers, name):
                body = orjson.loads(record.value)
                seen[body["event_id"]] += 1
                assert body["category"] == category
                assert record.key == body["account_id"].encode()
                headers = dict(record.headers)
                assert headers["source-topic"] == source.encode()
                assert int(headers["source-offset"]) >= 0
                assert set(body) >= {"amount", "occurred_at", "end_to_end_id"}
                assert "deviceId" not in body and "traceId" not in body
        assert set(seen) == set(good), "every good event, and only those, reaches a sink"
        assert max(seen.values()) == 1, "no event forwarded twice"

        letters = [orjson.loads(r.value) for r in await read_all(brokers, dlq)]
        assert len(letters) == len(bad)
        by_value = {s.value: s for s in bad.values()}
        for letter in letters:
            original = base64.b64decode(letter["value_b64"])
            assert letter["reason"] == by_value[original].expected_reason.value
            assert letter["source_topic"] == source
            assert letter["stage"] in ("decode", "validate")
            assert letter["error"] and letter["worker_id"] and letter["attempts"] == 1

    try:
        event_loop_run(scenario())
    except BaseException:
        print(worker.tail())
        raise
