"""Fixtures on the real local stack: started once per session, fresh names per test.

The stack is started by scripts/stack (the same script users run); if a server cannot
start, the session fails here, it never skips.
"""
from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from devtools.kafka import delete_topics
from devtools import processes
from devtools.processes import ROOT, Worker, free_port, stack_env
from devtools.stores import create_database, drop_database, drop_keyspace, seed_accounts


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call" and report.failed:
        item.failed_call = True  # type: ignore[attr-defined]  # read by the workers fixture
    return report


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def stack() -> dict[str, str]:
    """Start (or find running) the whole local stack; its settings as APP_* variables."""
    # Under the shared test lock: a disruptive test of another session may have stopped a
    # server on purpose, and `up` must not restart it under that test's feet.
    with processes.stack_lock():
        up = subprocess.run([str(ROOT / "scripts" / "stack"), "up"], capture_output=True, text=True)
    if up.returncode != 0:
        pytest.fail(f"scripts/stack up failed (rc {up.returncode}):\n{up.stdout}\n{up.stderr}",
                    pytrace=False)
    return stack_env()


@pytest.fixture
def run_id() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture(autouse=True)
def stack_lock(request: pytest.FixtureRequest) -> Iterator[None]:
    """Tests marked `disruptive` stop servers: they hold the stack alone (an exclusive
    flock), every other integration test holds it shared. Harmless in CI; it keeps
    parallel test sessions on one developer machine from breaking each other."""
    if "tests/integration" not in str(request.node.fspath):
        yield
        return
    with processes.stack_lock(exclusive=request.node.get_closest_marker("disruptive") is not None):
        yield


@pytest.fixture
def pg_dsn(stack: dict[str, str], run_id: str) -> Iterator[str]:
    """A fresh PostgreSQL database for this test (migrations are the app's job)."""
    dsn = asyncio.run(create_database(stack["APP_POSTGRES_DSN"], f"t{run_id}"))
    yield dsn
    asyncio.run(drop_database(dsn))


@pytest.fixture
def app_env(stack: dict[str, str], run_id: str, tmp_path: Path, pg_dsn: str) -> Iterator[dict[str, str]]:
    """Settings for a worker that shares nothing with other tests: own topics, consumer
    group, PostgreSQL database and CQL keyspace (dropped at the end, with the topics: a
    broker left with thousands of test topics gets slow for every later test)."""
    env = {
        **stack,
        "APP_POSTGRES_DSN": pg_dsn,
        "APP_ENV": "test",
        "APP_ID": f"test-{run_id}",
        "APP_TOPIC_PREFIX": f"t{run_id}.",
        "APP_CQL_KEYSPACE": f"t{run_id}",
        "APP_WEB_PORT": str(free_port()),
        "APP_DATA_DIR": str(tmp_path / "worker-data"),
        "APP_BATCH_WAIT_S": "0.05",
    }
    yield env
    from app.settings import Settings
    drop_keyspace(Settings.load(env))
    # The test's topics: its prefix's, and faust's own (changelogs, assignor) named after APP_ID.
    asyncio.run(delete_topics(env["APP_KAFKA_BROKERS"], [env["APP_TOPIC_PREFIX"], env["APP_ID"] + "-"]))


@pytest.fixture
def workers(app_env: dict[str, str], tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A factory of workers sharing one test's settings; all are stopped at the end."""
    started: list[Worker] = []

    def make(**overrides: str) -> Worker:
        index = len(started)
        env = {**app_env, "APP_WEB_PORT": str(free_port()), **overrides}
        worker = Worker(env, tmp_path / f"worker-{index}.log")
        started.append(worker)
        return worker

    yield make
    if getattr(request.node, "failed_call", False):
        # A failed test's workers show where they were: every stack, then the log's end.
        for index, worker in enumerate(started):
            worker.dump_stacks()
            print(f"\n===== worker {index} after the failure: stacks and last log lines =====")
            print(worker.tail(1000))
    for worker in started:
        try:
            worker.stop()
        except Exception:  # noqa: BLE001 - teardown must reach every worker
            worker.kill()


@pytest.fixture
def settings(app_env: dict[str, str]) -> Any:
    from app.settings import Settings
    return Settings.load(app_env)


@pytest.fixture
def event_loop_run() -> Iterator[Any]:
    """Run a coroutine to completion on a fresh loop (no pytest-asyncio needed)."""
    loop = asyncio.new_event_loop()
    yield loop.run_until_complete
    loop.close()


@pytest.fixture
def accounts(settings: Any) -> int:
    """The test database migrated and seeded with demo accounts acc-000000..acc-000999."""
    asyncio.run(seed_accounts(settings, 1000, migrate=True, count_queries=True))
    return 1000


@pytest.fixture
def scram(stack: dict[str, str]) -> dict[str, str]:
    """Settings for the stack's SASL/SCRAM-SHA-512 listener, with the generated local user
    (.stack/kafka/scram.env, written by scripts/stack when it formats Kafka's storage)."""
    values = dict(line.split("=", 1) for line in
                  (ROOT / ".stack" / "kafka" / "scram.env").read_text().splitlines() if "=" in line)
    host = stack["APP_KAFKA_BROKERS"].split("://", 1)[1].rsplit(":", 1)[0]
    return {"APP_KAFKA_BROKERS": f"kafka://{host}:{os.environ.get('KAFKA_SASL_PORT', '19094')}",
            "APP_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "APP_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "APP_KAFKA_SASL_USERNAME": values["KAFKA_SCRAM_USER"],
            "APP_KAFKA_SASL_PASSWORD": values["KAFKA_SCRAM_PASSWORD"]}


@pytest.fixture
def scram_tls(scram: dict[str, str]) -> dict[str, str]:
    """SCRAM-SHA-512 over TLS (SASL_SSL, as on MSK): the stack's third listener, whose
    certificate is signed by the local CA in .stack/kafka/tls/ca.pem."""
    host = scram["APP_KAFKA_BROKERS"].split("://", 1)[1].rsplit(":", 1)[0]
    return {**scram, "APP_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "APP_KAFKA_BROKERS": f"kafka://{host}:{os.environ.get('KAFKA_SSL_PORT', '19095')}",
            "APP_KAFKA_SSL_CAFILE": str(ROOT / ".stack" / "kafka" / "tls" / "ca.pem")}
