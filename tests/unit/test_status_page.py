"""The status page renders a worker's /stats body: the figures, escaped, no scripts."""
from __future__ import annotations

from typing import Any

from app.web.status_page import render


def stats(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "worker": {"id": "host:1", "url": "http://w1:6066", "app_id": "txpipe", "uptime_s": 61.0},
        "ready": {"ready": True, "checks": {"postgres": {"ok": True, "detail": "reachable"}}},
        "recent": {"window_s": 60.0, "events_in_per_s": 1234.5, "forwarded_per_s": 1200.0,
                   "dead_lettered_per_s": 34.5, "e2e_events": 70000, "e2e_p50_at_most_s": 0.1,
                   "e2e_p99_at_most_s": 0.5},
        "events_in": {"transactions": {"t.raw": 74000}},
        "dead_letters": {"total": 2070, "by_reason": {"unknown_account": 2000, "<script>": 70}},
        "cache": {"hits": 90, "misses": 10, "hit_ratio": 0.9},
        "consumer_lag": {"total": 42, "partitions": [
            {"topic": "t.raw", "partition": 0, "end_offset": 1000, "committed_offset": 958, "lag": 42},
            {"topic": "t.raw", "partition": 1, "end_offset": 500, "committed_offset": 500, "lag": 0}]},
    }
    body.update(overrides)
    return body


def test_the_page_shows_throughput_lag_and_dead_letters() -> None:
    html = render(stats(), [{"url": "http://w1:6066", "stats": stats(), "self": True},
                            {"url": "http://w2:6066", "error": "TimeoutError"}])
    for text in ("READY", "1,234.5", "1,200", "34.5", "≤ 500 ms", "90.0 %", "unknown_account", "2,000",
                 "958", "Partitions behind", "http://w2:6066", "unreachable: TimeoutError", "74,000 events in"):
        assert text in html, text
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_a_worker_that_is_not_ready_says_why() -> None:
    body = stats(ready={"ready": False, "checks": {"cql": {"ok": False, "detail": "no answer within 2.0s"}}})
    html = render(body)
    assert "NOT READY" in html and "cql: no answer within 2.0s" in html
