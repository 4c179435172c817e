"""A real Prometheus (Debian's, through `scripts/stack up prometheus`) loads deploy/prometheus
and scrapes a test worker: the target is up, the pipeline's series arrive with the job's
labels, and every alert rule loads and evaluates. (Whether each rule fires on its condition is
tests/unit/test_prometheus_rules.py's job, with promtool.)"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from app.commands.samples.transactions import samples
from tests.integration.pipeline import output_count, produce
from devtools.processes import ROOT, free_port, wait_until

DEPLOY = ROOT / "deploy" / "prometheus"


class Prometheus:
    def __init__(self, port: int, stack_dir: Path) -> None:
        self.url, self.stack_dir = f"http://127.0.0.1:{port}", stack_dir

    def api(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=10) as reply:
            body = json.load(reply)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        return list(self.api("query", query=promql)["result"])


@pytest.fixture
def prometheus(workers: Any, tmp_path: Path) -> Iterator[tuple[Prometheus, Any]]:
    """A test worker, and a Prometheus of its own (own port and data) scraping it each second."""
    worker = workers().start()
    port, stack_dir = free_port(), tmp_path / "stack"
    env = {**os.environ, "STACK_DIR": str(stack_dir), "PROMETHEUS_PORT": str(port),
           "PROMETHEUS_TARGETS": f"127.0.0.1:{worker.env['APP_WEB_PORT']}", "PROMETHEUS_INTERVAL": "1s"}
    up = subprocess.run([str(ROOT / "scripts" / "stack"), "up", "prometheus"], env=env, capture_output=True,
                        text=True, timeout=120)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        yield Prometheus(port, stack_dir), worker
    finally:
        # Only this test's Prometheus: the process group recorded in its own stack directory.
        pid = int((stack_dir / "run" / "prometheus.pid").read_text())
        os.killpg(pid, signal.SIGTERM)


def test_prometheus_scrapes_a_worker_with_the_deployed_config(prometheus: tuple[Prometheus, Any],
                                                              settings: Any, accounts: int,
                                                              event_loop_run: Any) -> None:
    prom, worker = prometheus
    event_loop_run(produce(settings, samples(200, bad_ratio=0.1, accounts=1000, seed=5)))

    async def processed() -> bool:
        return await output_count(settings) == 200

    event_loop_run(wait_until(processed, 120, "200 events processed"))

    def target_up() -> bool:
        targets = prom.api("targets")["activeTargets"]
        return len(targets) == 1 and targets[0]["health"] == "up"

    event_loop_run(wait_until(target_up, 30, "the worker target up"))
    (target,) = prom.api("targets")["activeTargets"]
    assert target["labels"]["job"] == "txpipe-worker"
    assert target["scrapeUrl"] == f"http://127.0.0.1:{worker.env['APP_WEB_PORT']}/metrics"

    raw = settings.topic("transactions.raw")

    def scraped_after_processing() -> bool:
        return bool(prom.query(f'pipeline_events_in_total{{topic="{raw}"}} == 200'))

    event_loop_run(wait_until(scraped_after_processing, 30, "pipeline_events_in_total of the 200 events"))
    names = {r["metric"]["__name__"] for r in prom.query('{__name__=~"pipeline_.+", job="txpipe-worker"}')}
    assert {"pipeline_events_in_total", "pipeline_events_out_total", "pipeline_dead_letters_total",
            "pipeline_consumer_lag", "pipeline_cache_hits_total", "pipeline_batch_size_bucket",
            "pipeline_e2e_latency_seconds_bucket", "pipeline_ready", "pipeline_ready_check"} <= names, names
    assert [float(r["value"][1]) for r in prom.query('up{job="txpipe-worker"}')] == [1.0]
    assert [float(r["value"][1]) for r in prom.query("pipeline_ready")] == [1.0]
    dead = prom.query("sum(pipeline_events_out_total{category=\"dead_letter\"})")
    assert dead and float(dead[0]["value"][1]) > 0

    # Every rule of the deployed files is loaded and evaluates without error; none fires on a
    # healthy worker.
    deployed = {rule["alert"] for f in yaml.safe_load((DEPLOY / "prometheus.yml").read_text())["rule_files"]
                for group in yaml.safe_load((DEPLOY / Path(f).name).read_text())["groups"]
                for rule in group["rules"]}

    def evaluated() -> bool:
        rules = [r for g in prom.api("rules")["groups"] for r in g["rules"]]
        return {r["name"] for r in rules} == deployed and all(r["health"] == "ok" for r in rules)

    event_loop_run(wait_until(evaluated, 30, "every rule evaluated"))
    firing = [a for a in prom.api("alerts")["alerts"] if a["state"] == "firing"]
    assert firing == []
