"""Talking to a running worker's web endpoint from integration tests."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any, Optional

from prometheus_client.parser import text_string_to_metric_families

from devtools.processes import Worker, wait_until


class Reply:
    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


def http(worker: Worker, path: str, method: str = "GET", headers: Optional[dict[str, str]] = None,
         body: Optional[bytes] = None) -> Reply:
    url = f"http://127.0.0.1:{worker.env['APP_WEB_PORT']}{path}"
    request = urllib.request.Request(url, method=method, headers=headers or {}, data=body)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return Reply(response.status, response.headers, response.read())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, exc.headers, exc.read())


def url_of(worker: Worker) -> str:
    return f"http://127.0.0.1:{worker.env['APP_WEB_PORT']}"


def metrics_of(worker: Worker) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    reply = http(worker, "/metrics")
    assert reply.status == 200 and reply.headers["Content-Type"].startswith("text/plain"), reply.status
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(reply.text) for s in family.samples}


def total(samples_: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples_.items()
               if n == name and all(dict(ls).get(k) == want for k, want in labels.items()))


def wait_ready(worker: Worker, event_loop_run: Any, timeout: float = 90) -> None:
    event_loop_run(wait_until(lambda: http(worker, "/ready").status == 200, timeout, f"{url_of(worker)}/ready"))
