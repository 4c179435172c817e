"""Fixtures on the real local stack: started once per session, fresh names per test.

The stack is started by scripts/stack (the same script users run); if a server cannot
start, the session fails here, it never skips.
"""
from __future__ import annotations

import asyncio
import subprocess
import uuid
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import pytest

from tests.integration.support import ROOT, Worker, free_port


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def stack() -> dict[str, str]:
    """Start (or find running) the whole local stack; its settings as APP_* variables."""
    up = subprocess.run([str(ROOT / "scripts" / "stack"), "up"], capture_output=True, text=True)
    if up.returncode != 0:
        pytest.fail(f"scripts/stack up failed (rc {up.returncode}):\n{up.stdout}\n{up.stderr}",
                    pytrace=False)
    env = subprocess.run([str(ROOT / "scripts" / "stack"), "env"], capture_output=True, text=True,
                         check=True).stdout
    return dict(line.split("=", 1) for line in env.splitlines() if "=" in line)


@pytest.fixture
def run_id() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def app_env(stack: dict[str, str], run_id: str, tmp_path: Path) -> dict[str, str]:
    """Settings for a worker that shares nothing with other tests: own topics, group, keyspace."""
    return {
        **stack,
        "APP_ENV": "test",
        "APP_ID": f"test-{run_id}",
        "APP_TOPIC_PREFIX": f"t{run_id}.",
        "APP_CQL_KEYSPACE": f"t{run_id}",
        "APP_WEB_PORT": str(free_port()),
        "APP_DATA_DIR": str(tmp_path / "worker-data"),
        "APP_BATCH_WAIT_S": "0.05",
    }


@pytest.fixture
def workers(app_env: dict[str, str], tmp_path: Path) -> Iterator[Any]:
    """A factory of workers sharing one test's settings; all are stopped at the end."""
    started: list[Worker] = []

    def make(**overrides: str) -> Worker:
        index = len(started)
        env = {**app_env, "APP_WEB_PORT": str(free_port()), **overrides}
        worker = Worker(env, tmp_path / f"worker-{index}.log")
        started.append(worker)
        return worker

    yield make
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
