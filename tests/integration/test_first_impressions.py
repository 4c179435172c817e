"""What `make demo` shows a new user: the worker's address leads to the status page, and the
report command's output has no driver noise."""
from __future__ import annotations

import http.client
import logging
import os
import subprocess
from typing import Any

import pytest

from app.adapters.cql import Cql
from app.commands.samples.transactions import samples
from tests.integration.pipeline import output_count, produce
from devtools.processes import FAUST, ROOT, wait_until


def test_the_root_of_a_worker_leads_to_the_status_page(workers: Any, settings: Any, event_loop_run: Any) -> None:
    worker = workers().start()
    conn = http.client.HTTPConnection("127.0.0.1", int(worker.env["APP_WEB_PORT"]), timeout=10)
    conn.request("GET", "/")
    reply = conn.getresponse()
    assert (reply.status, reply.getheader("Location")) == (302, "/status")   # not faust's {"status":"OK"}
    reply.read()
    conn.request("GET", "/status")
    page = conn.getresponse()
    assert page.status == 200 and page.getheader("Content-Type", "").startswith("text/html")
    assert "<html" in page.read().decode().lower()
    conn.close()


def test_report_prints_the_history_count_without_the_servers_aggregation_warning(
        workers: Any, app_env: dict[str, str], settings: Any, accounts: int, event_loop_run: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    workers().start()
    event_loop_run(produce(settings, samples(100, bad_ratio=0.0, accounts=1000, seed=8)))

    async def processed() -> bool:
        return await output_count(settings) == 100

    event_loop_run(wait_until(processed, 120, "100 events processed"))

    # The count itself makes the server warn (the driver logs it): that is what the report hides.
    async def raw_count() -> int:
        cql = Cql(settings)
        try:
            rows = await cql.execute(f"SELECT count(*) FROM {settings.cql_keyspace}.history_by_event")
            return int(rows[0].count)
        finally:
            await cql.close()

    with caplog.at_level(logging.WARNING, logger="cassandra.protocol"):
        assert event_loop_run(raw_count()) == 100
    assert any("Aggregation query used without partition key" in r.getMessage() for r in caplog.records)

    report = subprocess.run([FAUST, "-A", "app.main", "report"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120, env={**os.environ, **app_env})
    output = report.stdout + report.stderr
    assert report.returncode == 0, output
    assert "Server warning" not in output and "Aggregation query" not in output, output
    (line,) = [x for x in report.stdout.splitlines() if x.startswith("ScyllaDB/Cassandra history rows")]
    assert line.split()[-1] == "100"
