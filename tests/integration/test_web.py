"""The web endpoint of running workers: every view's status and body, the cache lookup
routed across two workers, the status page in headless Chromium, and JSON logs."""
from __future__ import annotations

import collections
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Optional

import pytest
from aiokafka.partitioner import DefaultPartitioner

from app.commands.samples.transactions import Sample, samples
from domain.transactions import EVENT_TYPES, decode
from tests.integration.pipeline import (dead_letter_topic, expected_reason, forwarded, output_count, produce,
                                        seed_accounts, stored_dead_letters)
from devtools.processes import ROOT, wait_until
from tests.integration.web import http, metrics_of, total, url_of, wait_ready

CHROMIUM = "/usr/bin/chromium"
TOKEN = "s3cret-replay-token"




def category_of(sample: Sample) -> str:
    return EVENT_TYPES[decode(sample.value)["eventType"]]


def process(settings: Any, data: list[Sample], event_loop_run: Any, timeout: float = 120,
            pace: Optional[tuple[int, float]] = None) -> None:
    """Produce the samples and wait until each is forwarded or dead-lettered and every dead
    letter is stored by the dead-letter agent (the test's topics start empty)."""
    event_loop_run(produce(settings, data, pace=pace))

    async def all_out() -> bool:
        return await output_count(settings) >= len(data)

    event_loop_run(wait_until(all_out, timeout, f"{len(data)} events out"))
    bad = sum(1 for s in data if expected_reason(s, 1000) is not None)
    event_loop_run(wait_until(lambda: len(stored_dead_letters(settings)) >= bad, 60, "dead letters stored"))


def chromium(*args: str) -> subprocess.CompletedProcess[bytes]:
    assert Path(CHROMIUM).is_file(), "Chromium is missing: scripts/bootstrap installs Debian's `chromium`"
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                           "--no-first-run", "--disable-background-networking", "--disable-component-update",
                           "--disable-sync", *args], capture_output=True, timeout=120)


# --- tests ------------------------------------------------------------------------------------

def test_health_ready_metrics_and_stats_of_a_running_worker(workers: Any, settings: Any, accounts: int,
                                                          event_loop_run: Any) -> None:
    worker = workers().start()                       # no APP_REPLAY_TOKEN: replay disabled
    health = http(worker, "/health")
    assert (health.status, health.json()) == (200, {"status": "ok", "detail": "ok"})
    wait_ready(worker, event_loop_run)
    ready = http(worker, "/ready").json()
    assert ready["ready"] is True
    assert set(ready["checks"]) == {"partitions_assigned", "tables_recovered", "batches", "postgres", "cql",
                                    "schema_registry"}
    assert all(check["ok"] for check in ready["checks"].values()), ready
    assert http(worker, "/table/accounts-cache/").status == 404           # faust's table views are off
    assert http(worker, "/dead-letters/replay", "POST").status == 403     # no token configured

    data = samples(3000, bad_ratio=0.1, accounts=1100, seed=61)
    process(settings, data, event_loop_run)
    reasons = collections.Counter(expected_reason(s, accounts).value for s in data if expected_reason(s, accounts))
    good = [s for s in data if expected_reason(s, accounts) is None]
    raw = settings.topic("transactions.raw")

    async def drained() -> bool:
        return total(metrics_of(worker), "pipeline_dead_letters_total") == sum(reasons.values()) and \
            total(metrics_of(worker), "pipeline_consumer_lag", topic=raw) == 0

    event_loop_run(wait_until(drained, 60, "dead letters counted and lag back to 0"))
    m = metrics_of(worker)
    assert total(m, "pipeline_events_in_total", topic=raw) == 3000
    for category, n in collections.Counter(category_of(s) for s in good).items():
        assert total(m, "pipeline_events_out_total", category=category, topic=settings.sink_topic(category)) == n
    assert total(m, "pipeline_events_out_total", category="dead_letter",
                 topic=settings.topic("pipeline.dlq")) == len(data) - len(good)
    for reason, n in reasons.items():
        assert total(m, "pipeline_dead_letters_total", reason=reason) == n, reason
    hits, misses = total(m, "pipeline_cache_hits_total"), total(m, "pipeline_cache_misses_total")
    assert misses >= 1 and hits >= 1
    assert total(m, "pipeline_cache_hit_ratio") == pytest.approx(hits / (hits + misses))
    assert total(m, "pipeline_e2e_latency_seconds_count", agent="transactions") == 3000
    assert total(m, "pipeline_e2e_latency_seconds_bucket", agent="transactions", le="+Inf") == 3000
    assert total(m, "pipeline_batch_size_sum", agent="transactions") == 3000
    assert 1 <= total(m, "pipeline_batch_size_count", agent="transactions") <= 3000
    assert total(m, "pipeline_postgres_seconds_count", op="get_accounts") >= 1
    assert total(m, "pipeline_cql_seconds_count", op="record_history") >= 1
    assert total(m, "pipeline_cql_seconds_count", op="store_dead_letters") >= 1
    assert len([1 for (n, ls) in m if n == "pipeline_consumer_lag" and dict(ls)["topic"] == raw]) == 8
    assert total(m, "faust_messages_received_per_topic_total", topic=raw) == 3000
    assert total(m, "pipeline_ready") == 1 and total(m, "pipeline_ready_check") == 6
    assert total(m, "process_cpu_seconds_total") > 0

    stats = http(worker, "/stats")
    assert stats.status == 200 and stats.headers["Content-Type"].startswith("application/json")
    body = stats.json()
    assert body["worker"]["url"] == url_of(worker) and body["ready"]["ready"] is True
    assert body["events_in"] == {"transactions": {raw: 3000}}
    assert body["dead_letters"]["by_reason"] == dict(reasons) and body["dead_letters"]["total"] == sum(reasons.values())
    assert body["cache"] == {"hits": hits, "misses": misses, "hit_ratio": round(hits / (hits + misses), 4)}
    raw_partitions = [p for p in body["consumer_lag"]["partitions"] if p["topic"] == raw]
    # the figures are the broker's: end offsets add up to what was produced, all committed
    assert sum(p["end_offset"] for p in raw_partitions) == 3000
    assert all(p["committed_offset"] == p["end_offset"] and p["lag"] == 0 for p in raw_partitions)


def test_cache_lookup_is_routed_to_the_owning_worker_across_two_workers(
        workers: Any, settings: Any, accounts: int, event_loop_run: Any) -> None:
    first, second = workers().start(), workers().start()
    raw = settings.topic("transactions.raw")

    def owners() -> dict[int, str]:
        owned = {}
        for worker in (first, second):
            for p in http(worker, "/stats").json()["consumer_lag"]["partitions"]:
                if p["topic"] == raw:
                    owned[p["partition"]] = url_of(worker)
        return owned

    def split() -> bool:
        return all(http(w, "/ready").status == 200 for w in (first, second)) and \
            len(owners()) == 8 and set(owners().values()) == {url_of(first), url_of(second)}

    event_loop_run(wait_until(split, 120, "both workers ready, the partitions split between them"))
    data = samples(2000, accounts=300, seed=71)
    process(settings, data, event_loop_run)
    owner = owners()
    hash_key = DefaultPartitioner()
    seen = sorted({s.key.decode() for s in data})[:40]
    routed = collections.Counter()
    for account in seen:
        partition = hash_key(account.encode(), list(range(8)), list(range(8)))
        replies = [http(worker, f"/cache/{account}") for worker in (first, second)]
        assert [r.status for r in replies] == [200, 200], [r.text for r in replies]
        assert replies[0].json() == replies[1].json(), "both workers must give the owner's answer"
        answer = replies[0].json()
        # the worker that processed the account's events (owner of its input partition) holds it
        assert answer["partition"] == partition and answer["served_by"] == owner[partition], answer
        assert answer["entry"]["account"]["customer_id"] == int(account[4:]) and answer["fresh"] is True
        for worker in (first, second):
            if url_of(worker) != answer["served_by"]:
                routed[url_of(worker)] += 1
    assert set(routed) == {url_of(first), url_of(second)}, f"lookups were not routed both ways: {routed}"
    never = [http(worker, "/cache/acc-987654") for worker in (first, second)]
    assert [r.status for r in never] == [404, 404] and never[0].json() == never[1].json()
    assert never[0].json()["error"] == "not in the cache"


def test_history_dead_letters_views_and_json_logs(workers: Any, settings: Any, accounts: int,
                                                  event_loop_run: Any) -> None:
    worker = workers(APP_LOG_FORMAT="json").start()
    data = samples(800, bad_ratio=0.1, accounts=1100, seed=81)
    process(settings, data, event_loop_run)
    good = [s for s in data if expected_reason(s, accounts) is None]

    by_account = collections.defaultdict(set)
    for s in good:
        by_account[s.key.decode()].add(s.event_id)
    account, ids = max(by_account.items(), key=lambda item: len(item[1]))
    assert len(ids) >= 2
    history = http(worker, f"/accounts/{account}/history")
    assert history.status == 200
    body = history.json()
    assert body["account_id"] == account and body["count"] == len(ids)
    assert {e["event_id"] for e in body["events"]} == ids
    times = [e["occurred_at"] for e in body["events"]]
    assert times == sorted(times, reverse=True) and all(t.endswith("+00:00") for t in times)
    assert all(e["customer_name"] and e["source_topic"] == settings.topic("transactions.raw")
               for e in body["events"])
    assert http(worker, f"/accounts/{account}/history?limit=1").json()["count"] == 1
    for bad_limit in ("0", "x", "5000"):
        assert http(worker, f"/accounts/{account}/history?limit={bad_limit}").status == 400
    assert http(worker, "/accounts/acc-987654/history").json() == {"account_id": "acc-987654", "count": 0,
                                                                     "events": []}

    event_id = next(iter(ids))
    event = http(worker, f"/events/{event_id}")
    assert event.status == 200 and event.json()["account_id"] == account
    assert http(worker, "/events/no-such-event").status == 404

    reasons = collections.Counter(expected_reason(s, accounts).value for s in data if expected_reason(s, accounts))
    unknown = http(worker, "/dead-letters?reason=unknown_account&limit=1000")
    assert unknown.status == 200
    body = unknown.json()
    assert body["count"] == reasons["unknown_account"] == len(body["dead_letters"])
    assert all(d["reason"] == "unknown_account" and d["stage"] == "enrich" for d in body["dead_letters"])
    assert all("value_b64" not in d and d["value_size"] > 0 for d in body["dead_letters"])
    decode_stage = http(worker, "/dead-letters?stage=decode&limit=1000").json()
    assert decode_stage["count"] == reasons["undecodable"] + reasons["not_an_object"]
    assert http(worker, "/dead-letters?limit=3").json()["count"] == 3
    assert http(worker, "/dead-letters?since=2099-01-01T00:00:00Z&until=2099-01-02T00:00:00Z").json()["count"] == 0
    assert http(worker, "/dead-letters?limit=1000").json()["count"] == sum(reasons.values())
    for query, message in (("reason=bogus", "not a known reason"), ("since=yesterday", "ISO-8601"),
                           ("limit=0", "limit must be")):
        reply = http(worker, f"/dead-letters?{query}")
        assert reply.status == 400 and message in reply.json()["error"], query

    # JSON logs: every log line is one JSON object; dead-letter lines carry the event's position
    lines = [line for line in worker.log_path.read_text().splitlines() if line.startswith("{")]
    parsed = [json.loads(line) for line in lines]
    assert any(p["message"].endswith("[^Worker]: Ready") for p in parsed)
    about_events = [p for p in parsed if p["logger"] == "agents.transactions" and "dead letter" in p["message"]]
    letters = {(d["source_topic"], d["source_partition"], d["source_offset"])
               for d in event_loop_run(dead_letter_topic(settings))}
    assert {(p["topic"], p["partition"], p["offset"]) for p in about_events} == letters
    with_ids = {p["event_id"] for p in about_events if p["event_id"]}
    assert with_ids and with_ids <= {s.event_id for s in data}
    stored = [p for p in parsed if p["logger"] == "agents.dead_letters"]
    assert len(stored) == len(letters) and all({"event_id", "topic", "partition", "offset", "reason"} <= set(p)
                                                for p in stored)


def test_replay_needs_the_token_and_sends_dead_letters_back(workers: Any, settings: Any, accounts: int,
                                                            event_loop_run: Any) -> None:
    worker = workers(APP_REPLAY_TOKEN=TOKEN, APP_CACHE_NEGATIVE_TTL_S="1").start()
    data = samples(600, accounts=1100, seed=91)
    unknown = {s.event_id for s in data if expected_reason(s, accounts) is not None}
    assert unknown
    process(settings, data, event_loop_run)

    path = "/dead-letters/replay?reason=unknown_account"
    missing = http(worker, path, "POST")
    assert missing.status == 401 and missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert missing.json() == {"error": "a valid bearer token is required"}
    assert http(worker, path, "POST", {"Authorization": "Bearer wrong"}).status == 401
    assert http(worker, path, "POST", {"Authorization": TOKEN}).status == 401       # scheme required
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    assert http(worker, path, "POST", auth, b"[1]").status == 400
    dry = http(worker, path, "POST", auth, json.dumps({"dry_run": True}).encode())
    assert dry.status == 200 and dry.json()["would_replay"] == len(unknown) and dry.json()["dry_run"] is True
    assert set(event_loop_run(forwarded(settings))) == {s.event_id for s in data} - unknown, "dry run sent something"

    event_loop_run(seed_accounts(settings, 1100))
    time.sleep(1.5)        # the cache's "unknown account" entries expire (APP_CACHE_NEGATIVE_TTL_S=1)
    replay = http(worker, path, "POST", auth)
    assert replay.status == 200, replay.text
    assert replay.json()["replayed"] == len(unknown) and replay.json()["selection"]["reason"] == "unknown_account"

    async def all_through() -> bool:
        return set(await forwarded(settings)) == {s.event_id for s in data}

    event_loop_run(wait_until(all_through, 60, "replayed events forwarded", 1.0))


def test_status_page_in_headless_chromium(workers: Any, settings: Any, accounts: int, event_loop_run: Any,
                                         tmp_path: Path) -> None:
    first, second = workers().start(), workers().start()
    event_loop_run(wait_until(lambda: all(http(w, "/ready").status == 200 for w in (first, second)), 120,
                              "both workers ready"))
    data = samples(4000, bad_ratio=0.08, accounts=1100, seed=101)
    process(settings, data, event_loop_run, pace=(400, 0.5))     # a few seconds of traffic for the rates

    page = http(first, "/status")
    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "READY" in page.text and url_of(second) in page.text and "unknown_account" in page.text

    dom = chromium("--virtual-time-budget=3000", "--dump-dom", f"{url_of(first)}/status")
    assert dom.returncode == 0, dom.stderr.decode()[-2000:]
    html = dom.stdout.decode()
    stats = http(first, "/stats").json()
    assert f"{sum(stats['events_in']['transactions'].values()):,} events in" in html
    assert "unreachable" not in html, "the status page could not reach the other worker"
    assert html.count('class="badge ok"') >= 3           # the header and both workers' rows

    png = tmp_path / "status-page.png"
    shot = chromium(f"--user-data-dir={tmp_path / 'chromium'}", f"--screenshot={png}", "--window-size=1200,900",
                    f"{url_of(first)}/status")
    assert shot.returncode == 0 and png.is_file(), shot.stderr.decode()[-2000:]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    if os.environ.get("TXPIPE_SAVE_SCREENSHOT"):         # refreshes the README's picture
        shutil.copy(png, ROOT / "docs" / "status-page.png")


@pytest.mark.disruptive
def test_ready_fails_and_lag_grows_while_postgres_is_down(workers: Any, settings: Any, accounts: int,
                                                          event_loop_run: Any) -> None:
    worker = workers(APP_BATCH_STUCK_S="3").start()
    wait_ready(worker, event_loop_run)
    raw = settings.topic("transactions.raw")
    stack("down postgres")
    try:
        def not_ready() -> bool:
            reply = http(worker, "/ready")
            return reply.status == 503 and reply.json()["checks"]["postgres"]["ok"] is False

        event_loop_run(wait_until(not_ready, 30, "/ready to answer 503"))
        body = http(worker, "/ready").json()
        assert body["ready"] is False and body["checks"]["cql"]["ok"] is True
        assert http(worker, "/health").status == 200, "a dependency outage is no reason to restart"
        # New accounts: every batch needs PostgreSQL, so nothing gets through or is committed.
        event_loop_run(produce(settings, samples(500, accounts=1000, seed=111)))
        event_loop_run(wait_until(lambda: total(metrics_of(worker), "pipeline_consumer_lag", topic=raw) == 500,
                                  30, "the lag of the 500 waiting events"))
        m = metrics_of(worker)
        assert total(m, "pipeline_ready") == 0 and total(m, "pipeline_ready_check", check="postgres") == 0

        # The waiting batch is named, with the outage it waits for, and nothing is dead-lettered.
        def batch_named() -> bool:
            check = http(worker, "/ready").json()["checks"]["batches"]
            return not check["ok"] and "outage of PostgreSQL (accounts)" in check["detail"] and raw in check["detail"]
        event_loop_run(wait_until(batch_named, 30, "/ready to name the stuck batch and its outage"))
        assert total(metrics_of(worker), "pipeline_oldest_batch_age_seconds", agent="transactions") > 3
        assert total(metrics_of(worker), "pipeline_isolated_events_total") == 0
        assert "NOT READY" in http(worker, "/status").text
    finally:
        stack("up postgres")
    wait_ready(worker, event_loop_run, timeout=120)
    event_loop_run(wait_until(lambda: total(metrics_of(worker), "pipeline_consumer_lag", topic=raw) == 0, 120,
                              "the lag to drain after the outage"))


def stack(args: str) -> None:
    subprocess.run([str(ROOT / "scripts" / "stack"), *args.split()], check=True, capture_output=True)
