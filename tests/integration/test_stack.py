"""Each server of the local stack does real work: the fixtures tests build on are sound."""
from __future__ import annotations

import json
import subprocess
import urllib.request
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from cassandra.cluster import Cluster

from app.kafka_tools import bootstrap
from devtools.processes import ROOT


def test_kafka_round_trip(stack: dict[str, str], run_id: str, event_loop_run: Any) -> None:
    servers = bootstrap(stack["APP_KAFKA_BROKERS"])
    topic = f"t{run_id}.roundtrip"

    async def scenario() -> list[bytes]:
        admin = AIOKafkaAdminClient(bootstrap_servers=servers)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
        finally:
            await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=servers, acks="all")
        await producer.start()
        try:
            for i in range(30):
                await producer.send_and_wait(topic, f"v{i}".encode(), key=f"k{i % 5}".encode())
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=servers, auto_offset_reset="earliest",
                                    group_id=f"g{run_id}")
        await consumer.start()
        got: list[bytes] = []
        try:
            while len(got) < 30:
                batch = await consumer.getmany(timeout_ms=10000)
                assert batch, "no data from Kafka within 10 s"
                got.extend(r.value for records in batch.values() for r in records)
        finally:
            await consumer.stop()
        return got

    assert sorted(event_loop_run(scenario())) == sorted(f"v{i}".encode() for i in range(30))


def test_postgres_answers(stack: dict[str, str], event_loop_run: Any) -> None:
    async def scenario() -> Any:
        conn = await asyncpg.connect(stack["APP_POSTGRES_DSN"])
        try:
            return await conn.fetchval("select $1::numeric * 2", "10.25")
        finally:
            await conn.close()

    assert str(event_loop_run(scenario())) == "20.50"


def test_cql_keyspace_round_trip(stack: dict[str, str], run_id: str) -> None:
    cluster = Cluster([stack["APP_CQL_HOSTS"]], port=int(stack["APP_CQL_PORT"]), connect_timeout=10)
    session = cluster.connect()
    keyspace = f"t{run_id}"
    try:
        session.execute(f"CREATE KEYSPACE {keyspace} WITH replication = "
                        "{'class': 'SimpleStrategy', 'replication_factor': 1}")
        session.execute(f"CREATE TABLE {keyspace}.kv (k text PRIMARY KEY, v int)")
        insert = session.prepare(f"INSERT INTO {keyspace}.kv (k, v) VALUES (?, ?)")
        session.execute(insert, ("a", 1))
        assert session.execute(f"SELECT v FROM {keyspace}.kv WHERE k = 'a'").one().v == 1
    finally:
        session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}")
        cluster.shutdown()


def test_schema_registry_round_trip(stack: dict[str, str], run_id: str) -> None:
    base = stack["APP_SCHEMA_REGISTRY_URL"]
    schema = json.dumps({"type": "record", "name": "Probe", "fields": [{"name": "a", "type": "string"}]})

    def call(method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(base + path, data=data, method=method,
                                     headers={"Content-Type": "application/vnd.schemaregistry.v1+json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    subject = f"t{run_id}-value"
    schema_id = call("POST", f"/subjects/{subject}/versions", {"schema": schema})["id"]
    assert call("POST", f"/subjects/{subject}/versions", {"schema": schema})["id"] == schema_id
    assert json.loads(call("GET", f"/schemas/ids/{schema_id}")["schema"])["name"] == "Probe"
    call("DELETE", f"/subjects/{subject}")


def test_second_stack_up_restarts_nothing(stack: dict[str, str]) -> None:
    run_dir = ROOT / ".stack" / "run"
    before = {p.name: p.read_text() for p in run_dir.glob("*.pid")}
    subprocess.run([str(ROOT / "scripts" / "stack"), "up"], check=True, capture_output=True)
    after = {p.name: p.read_text() for p in run_dir.glob("*.pid")}
    assert set(before) >= {"kafka.pid", "postgres.pid", "cassandra.pid", "registry.pid", "connect.pid"}
    assert after == before
