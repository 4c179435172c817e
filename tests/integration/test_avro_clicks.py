"""Avro clicks on the real stack: registry + broker + worker + CQL. Each test has its own
topic prefix, so its registry subject `<prefix>user-clicks-avro-value` is its own too."""
from __future__ import annotations

import base64
import collections
import os
import subprocess
from datetime import datetime, timezone
from typing import Any

import orjson
import pytest

from app.adapters.registry import IncompatibleSchema, SchemaNotRegistered, SchemaRegistry
from app.avro import AvroCodec, subject_for
from domain.avro import frame
from app.commands.samples.clicks import sample_clicks
from domain.errors import Reason
from models.avro_schemas import RAW_TRANSACTION, RAW_TRANSACTION_FIELDS, USER_CLICK
from tests.integration.clicks import (
    dead_letters,
    history,
    key_of,
    millis,
    produce,
    url_counts,
    wait_for_history,
)
from devtools.counting import CountingRegistry
from devtools.processes import FAUST, ROOT, wait_until

V2 = {**USER_CLICK, "fields": [*USER_CLICK["fields"],
                               {"name": "referrer", "type": ["null", "string"], "default": None}]}


def test_avro_clicks_round_trip(workers: Any, settings: Any, event_loop_run: Any) -> None:
    """Registered under <topic>-value, framed, consumed: a log line, a history row and a
    count per click, nothing dead-lettered."""
    worker = workers().start()
    topic = settings.topic(settings.clicks_topic)
    data = sample_clicks(400, users=40, urls=7, seed=1)

    async def scenario() -> None:
        registry = SchemaRegistry(settings)
        try:
            codec = AvroCodec(registry, USER_CLICK)
            encoder = await codec.use_schema(topic, auto_register=True)
            await produce(settings, [(d["user_id"].encode(), codec.encode(d)) for d in data])
            assert await registry.lookup(subject_for(topic), codec.reader.json()) == encoder.schema_id  # type: ignore[union-attr]
        finally:
            await registry.close()

        expected = {key_of(d) for d in data}
        await wait_for_history(settings, len(expected))

        async def all_counted() -> bool:
            return sum(url_counts(settings).values()) >= len(data)
        await wait_until(all_counted, 30, "every click counted")

        rows = history(settings)
        assert {(r.user_id, millis(r.clicked_at), r.url) for r in rows} == expected
        assert {r.schema_id for r in rows} == {encoder.schema_id}
        assert {r.source_topic for r in rows} == {topic}
        assert url_counts(settings) == dict(collections.Counter(d["url"] for d in data))
        assert await dead_letters(settings) == []

    event_loop_run(scenario())
    lines = [orjson.loads(line[line.index("{"):].strip())
             for line in worker.log_path.read_text().splitlines() if '"event":"click"' in line]
    assert len(lines) == len(data), "one structured log line per click"
    assert {(d["user_id"], d["url"]) for d in lines} == {(d["user_id"], d["url"]) for d in data}


def test_avro_schema_evolution_producer_adds_an_optional_field(workers: Any, settings: Any,
                                                                  event_loop_run: Any) -> None:
    """v1 clicks, then v2 (an added optional field, accepted by the registry under BACKWARD)
    from a newer producer: the worker, reading with v1, keeps storing both. An incompatible
    v3 is refused by the registry with a message that says so."""
    workers().start()
    topic = settings.topic(settings.clicks_topic)
    first, second = sample_clicks(60, seed=2), sample_clicks(60, seed=3, users=77)

    async def scenario() -> None:
        registry = SchemaRegistry(settings)
        try:
            v1 = AvroCodec(registry, USER_CLICK)
            id1 = (await v1.use_schema(topic, auto_register=True)).schema_id
            await produce(settings, [(None, v1.encode(d)) for d in first])
            await wait_for_history(settings, len({key_of(d) for d in first}))

            v2 = AvroCodec(registry, V2)              # the newer producer application
            id2 = (await v2.use_schema(topic, auto_register=True)).schema_id
            assert id2 != id1
            await produce(settings, [(None, v2.encode({**d, "referrer": "https://search.example/?q=x"}))
                                     for d in second])
            expected = {key_of(d) for d in first + second}
            await wait_for_history(settings, len(expected))
            rows = history(settings)
            assert {(r.user_id, millis(r.clicked_at), r.url) for r in rows} == expected
            assert {r.schema_id for r in rows} == {id1, id2}
            assert await dead_letters(settings) == []

            v3 = {**USER_CLICK, "fields": [{"name": "user_id", "type": "long"}, *USER_CLICK["fields"][1:]]}
            with pytest.raises(IncompatibleSchema) as info:
                await AvroCodec(registry).use_schema(topic, v3, auto_register=True)
            message = str(info.value)
            assert subject_for(topic) in message and "incompatible" in message and "BACKWARD" in message
            with pytest.raises(IncompatibleSchema, match="type_mismatch.*field user_id"):
                await AvroCodec(registry, USER_CLICK).use_schema(topic, v3, auto_register=True)
        finally:
            await registry.close()

    event_loop_run(scenario())


def test_avro_bad_bytes_are_dead_lettered_with_their_reason(workers: Any, settings: Any,
                                                            event_loop_run: Any) -> None:
    workers().start()
    topic = settings.topic(settings.clicks_topic)
    data = sample_clicks(30, seed=4)

    async def scenario() -> None:
        registry = SchemaRegistry(settings)
        try:
            codec = AvroCodec(registry, USER_CLICK)
            await codec.use_schema(topic, auto_register=True)
            good = [codec.encode(d) for d in data]
            # A schema this app cannot read, registered for real under another subject.
            other = {**USER_CLICK, "fields": [{"name": "user_id", "type": "long"}, *USER_CLICK["fields"][1:]]}
            alien = AvroCodec(registry)
            await alien.use_schema(settings.topic("other-clicks"), other, auto_register=True)
            alien_value = alien.encode({**data[0], "user_id": 42})
        finally:
            await registry.close()
        sample = good[0]
        bad = {
            b"\x01" + sample[1:]: Reason.BAD_MAGIC_BYTE,
            orjson.dumps(data[0], default=str): Reason.BAD_MAGIC_BYTE,       # JSON on an Avro topic
            frame(0x7FFFFFF0, sample[5:]): Reason.UNKNOWN_SCHEMA_ID,
            frame(0x7FFFFFF1, sample[5:]): Reason.UNKNOWN_SCHEMA_ID,
            sample[:3]: Reason.TRUNCATED_AVRO,                               # not even a header
            sample[:6]: Reason.TRUNCATED_AVRO,                               # body cut short
            sample[:-1]: Reason.TRUNCATED_AVRO,
            sample + b"\x02zz": Reason.INVALID_AVRO,                         # bytes after the record
            alien_value: Reason.INCOMPATIBLE_SCHEMA,
        }
        records = [(b"k", v) for v in good[:15]] + [(b"bad", v) for v in bad] + [(b"k", v) for v in good[15:]]
        await produce(settings, records)

        async def all_lettered() -> bool:
            return len(await dead_letters(settings)) >= len(bad)
        await wait_until(all_lettered, 90, f"{len(bad)} dead letters")
        await wait_for_history(settings, len({key_of(d) for d in data}))

        letters = await dead_letters(settings)
        assert len(letters) == len(bad)
        for letter in letters:
            original = base64.b64decode(letter["value_b64"])
            assert letter["reason"] == bad[original].value, letter
            assert letter["stage"] == "decode" and letter["source_topic"] == topic
            assert letter["error"] and base64.b64decode(letter["key_b64"]) == b"bad"
        assert {r.url for r in history(settings)} == {d["url"] for d in data}

    event_loop_run(scenario())


def test_avro_production_mode_uses_the_pre_registered_schema(settings: Any, event_loop_run: Any) -> None:
    topic = settings.topic(settings.clicks_topic)

    async def scenario() -> None:
        registry = SchemaRegistry(settings)
        try:
            codec = AvroCodec(registry, USER_CLICK)
            with pytest.raises(SchemaNotRegistered, match="auto-registration is off"):
                await codec.use_schema(topic, auto_register=False)
            status, _ = await registry._request("GET", f"/subjects/{subject_for(topic)}/versions")
            assert status == 404, "production mode registered nothing"
            registered = await AvroCodec(registry, USER_CLICK).use_schema(topic, auto_register=True)
            assert (await codec.use_schema(topic, auto_register=False)).schema_id == registered.schema_id
            v2 = AvroCodec(registry, V2)
            with pytest.raises(SchemaNotRegistered, match="not a registered version"):
                await v2.use_schema(topic, auto_register=False)
        finally:
            await registry.close()

    event_loop_run(scenario())


def test_avro_transactions_codec_against_the_registry(settings: Any, event_loop_run: Any) -> None:
    """What the transactions agent does with Avro values: prefetch the batch, decode each,
    validate like JSON. A fresh codec (empty cache) fetches the schema once by id."""
    import random

    from app.commands.samples.transactions import raw_event
    from domain.transactions import decode, to_transaction

    topic = settings.topic(settings.input_topics[0])
    rng = random.Random(5)
    events = [raw_event(rng, f"acc-{i:06d}", datetime.now(timezone.utc)) for i in range(20)]

    async def scenario() -> None:
        registry = SchemaRegistry(settings)
        try:
            producer = AvroCodec(registry, RAW_TRANSACTION)
            await producer.use_schema(topic, auto_register=True)
            values = [producer.encode({k: v for k, v in e.items() if k in RAW_TRANSACTION_FIELDS})
                      for e in events]
        finally:
            await registry.close()
        registry = CountingRegistry(settings)
        try:
            consumer = AvroCodec(registry, RAW_TRANSACTION)
            await consumer.prefetch(values + [frame(0x7FFFFFF2, b"")])
            assert registry.requests == 2, "one request per distinct schema id"
            await consumer.prefetch(values)
            assert registry.requests == 2
            txs = [to_transaction(decode(v, avro=consumer.decode)) for v in values]
            assert [tx.event_id for tx in txs] == [e["eventId"] for e in events]
        finally:
            await registry.close()

    event_loop_run(scenario())


def test_send_clicks_command(workers: Any, app_env: dict[str, str], settings: Any,
                             event_loop_run: Any) -> None:
    """The producer command registers the schema, shows a progress bar, and its spoiled
    values come out as dead letters; with auto-registration off and nothing registered it
    stops with one line."""
    workers().start()
    env = {**os.environ, **app_env}
    done = subprocess.run([FAUST, "-A", "app.main", "send-clicks", "-n", "500", "--bad-ratio", "0.1",
                           "--seed", "9"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "500/500" in done.stderr, "tqdm progress bar"
    spoiled = done.stdout.split("spoiled on purpose: ", 1)[1].splitlines()[0]
    n_bad = sum(int(part.split()[0]) for part in spoiled.split(", "))
    assert 20 < n_bad < 90

    async def scenario() -> None:
        async def all_lettered() -> bool:
            return len(await dead_letters(settings)) >= n_bad
        await wait_until(all_lettered, 90, f"{n_bad} dead letters")
        reasons = collections.Counter(letter["reason"] for letter in await dead_letters(settings))
        assert set(reasons) <= {"bad_magic_byte", "unknown_schema_id", "truncated_avro"}
        assert sum(reasons.values()) == n_bad

        async def all_counted() -> bool:
            return sum(url_counts(settings).values()) >= 500 - n_bad
        await wait_until(all_counted, 60, "every good click counted")
        assert sum(url_counts(settings).values()) == 500 - n_bad

    event_loop_run(scenario())

    prod = subprocess.run([FAUST, "-A", "app.main", "send-clicks", "-n", "5"],
                          env={**env, "APP_SCHEMA_AUTO_REGISTER": "false",
                               "APP_TOPIC_PREFIX": settings.topic_prefix + "prod."},
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert prod.returncode != 0
    assert "send-clicks: no subject" in prod.stdout + prod.stderr
    assert "Traceback" not in prod.stdout + prod.stderr
