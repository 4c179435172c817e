"""The worker's web endpoint (bind address and port from settings; see the README for each view).

/ (leads to /status), /health, /ready, /metrics, /stats, /status (HTML), /cache/{account_id} (routed to the worker
that owns the key), /accounts/{account_id}/history, /events/{event_id}, /dead-letters and
POST /dead-letters/replay (bearer token from APP_REPLAY_TOKEN).
"""
from __future__ import annotations

import asyncio
import hmac
import logging
import time
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any, Mapping, Optional

import aiohttp
import orjson
from cassandra.util import Date as CqlDate
from faust import web
from prometheus_client.exposition import choose_encoder

from app import metrics, replay
from app.web import status_page
from app.main import app, settings
from app.tables import accounts_cache
from domain.enrichment import is_fresh
from domain.errors import TransientError

log = logging.getLogger(__name__)
HISTORY_LIMIT_MAX = 1000
PEER_TIMEOUT_S = 2.5


def _jsonable(row: Any) -> dict[str, Any]:
    """A driver row as JSON-friendly values: timestamps ISO-8601 UTC, decimals as strings."""
    out = {}
    for key, value in (row._asdict() if hasattr(row, "_asdict") else dict(row)).items():
        if isinstance(value, datetime):
            value = (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).isoformat()
        elif isinstance(value, (date, Decimal, CqlDate)):
            value = str(value)
        out[key] = value
    return out


def _unavailable(view: web.View, exc: TransientError) -> web.Response:
    return view.json({"error": "a server the view needs is unavailable", "detail": str(exc)}, status=503)


# First of the pages on purpose: faust's own "/" (its production index, a bare {"status":"OK"})
# is added after them, when the server starts, and aiohttp serves the first route of a path.
# Someone who opens a worker in a browser wants the status page.
@app.page("/")
async def index_view(self: web.View, request: web.Request) -> web.Response:
    """Leads to /status."""
    return self.html('<a href="/status">/status</a>\n', status=302, headers={"Location": "/status"})


@app.page("/health")
async def health_view(self: web.View, request: web.Request) -> web.Response:
    """Liveness: 200 while the worker runs, 503 once it crashed or is stopping."""
    ok, detail = app.health.alive()
    return self.json({"status": "ok" if ok else "failing", "detail": detail}, status=200 if ok else 503)


@app.page("/ready")
async def ready_view(self: web.View, request: web.Request) -> web.Response:
    """Readiness: 200 when partitions are assigned, tables recovered and PostgreSQL, the CQL
    server and the schema registry answer; 503 with the failing checks otherwise."""
    readiness = await app.health.readiness()
    return self.json(readiness.asdict(), status=200 if readiness.ready else 503)


if settings.metrics_enabled:
    @app.page("/metrics")
    async def metrics_view(self: web.View, request: web.Request) -> web.Response:
        """Prometheus text format: the pipeline's metrics, faust's sensor, the process."""
        await app.observability.refresh_for_scrape()
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))   # OpenMetrics if asked
        return self.bytes(encoder(metrics.registry), headers={"Content-Type": content_type})


@app.page("/stats")
async def stats_view(self: web.View, request: web.Request) -> web.Response:
    """This worker's pipeline figures as JSON."""
    return self.json(await app.observability.stats())


async def _peer_stats(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    try:
        async with session.get(url.rstrip("/") + "/stats") as response:
            return {"url": url, "stats": await response.json()}
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
        return {"url": url, "error": f"{type(exc).__name__}: {exc}"}


@app.page("/status")
async def status_view(self: web.View, request: web.Request) -> web.Response:
    """The HTML status page: this worker, and the other workers of the group when known."""
    own = await app.observability.stats()
    me = str(app.conf.canonical_url).rstrip("/")
    peers = sorted(url.rstrip("/") for url in app.router.tables_metadata() if url.rstrip("/") != me)
    timeout = aiohttp.ClientTimeout(total=PEER_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        others = await asyncio.gather(*(_peer_stats(session, url) for url in peers))
    workers = sorted([{"url": me, "stats": own, "self": True}, *others], key=lambda w: w["url"])
    return self.html(status_page.render(own, workers))


@app.page("/cache/{account_id}")
@app.table_route(table=accounts_cache, match_info="account_id")
async def cache_entry(self: web.View, request: web.Request, *args: Any, **params: Any) -> web.Response:
    """An account's entry in the enrichment cache, answered by the worker that owns the key
    (faust's table_route forwards the request when that is another worker)."""
    account_id = request.match_info["account_id"]
    entry = accounts_cache.get(account_id)
    partition = app.producer.key_partition(accounts_cache.changelog_topic.get_topic_name(),
                                           account_id.encode()).partition
    answer = {"account_id": account_id, "partition": partition, "served_by": str(app.conf.canonical_url)}
    if entry is None:
        return self.json({**answer, "error": "not in the cache"}, status=404)
    fresh = is_fresh(entry, time.time(), settings.cache_ttl_s, settings.cache_negative_ttl_s)
    return self.json({**answer, "entry": entry, "fresh": fresh})


def _limit(request: web.Request, default: int, most: int) -> Optional[int]:
    try:
        limit = int(request.query.get("limit", default))
    except ValueError:
        return None
    return limit if 1 <= limit <= most else None


@app.page("/accounts/{account_id}/history")
class AccountHistory(web.View):
    """An account's most recent processed transactions, from ScyllaDB (newest first)."""

    async def get(self, request: web.Request, account_id: str) -> web.Response:
        limit = _limit(request, 50, HISTORY_LIMIT_MAX)
        if limit is None:
            return self.error(400, f"limit must be an integer between 1 and {HISTORY_LIMIT_MAX}")
        try:
            rows = await app.resources.history.account_history(account_id, limit=limit)
        except TransientError as exc:
            return _unavailable(self, exc)
        return self.json({"account_id": account_id, "count": len(rows), "events": [_jsonable(r) for r in rows]})


@app.page("/events/{event_id}")
class EventHistory(web.View):
    """Where and when one event was processed, from ScyllaDB."""

    async def get(self, request: web.Request, event_id: str) -> web.Response:
        try:
            row = await app.resources.history.event_history(event_id)
        except TransientError as exc:
            return _unavailable(self, exc)
        if row is None:
            return self.json({"event_id": event_id, "error": "no such event in the history"}, status=404)
        return self.json(_jsonable(row))


def _dead_letter_json(row: Any) -> dict[str, Any]:
    """A stored dead letter without its payload (the original bytes hold customer data)."""
    out = _jsonable(row)
    value = out.pop("value_b64", None)
    out.pop("key_b64", None)
    out["value_size"] = None if value is None else len(value) * 3 // 4
    return out


@app.page("/dead-letters")
class DeadLetters(web.View):
    """Recent dead letters, filtered by reason, stage and time of failure (since/until,
    ISO-8601, default the last 24 hours); at most `limit` (default 100)."""

    async def get(self, request: web.Request) -> web.Response:
        try:
            selection = replay.selection_from(request.query, datetime.now(timezone.utc), default_limit=100)
        except ValueError as exc:
            return self.error(400, str(exc))
        try:
            rows = await replay.find(app.resources.dead_letter_store, selection)
        except TransientError as exc:
            return _unavailable(self, exc)
        return self.json({"selection": _describe(selection), "count": len(rows),
                          "dead_letters": [_dead_letter_json(r) for r in rows]})


def _describe(selection: replay.Selection) -> dict[str, Any]:
    return {"reason": selection.reason, "stage": selection.stage, "limit": selection.limit,
            "since": selection.since.isoformat() if selection.since else None,
            "until": selection.until.isoformat() if selection.until else None}


def _token_error(view: web.View, request: web.Request) -> Optional[web.Response]:
    """403 when replay over HTTP is disabled (no token configured), 401 without the token."""
    if not settings.replay_token:
        return view.error(403, "replay over HTTP is disabled: APP_REPLAY_TOKEN is not set")
    given = request.headers.get("Authorization", "")
    scheme, _, token = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), settings.replay_token.encode()):
        return view.error(401, "a valid bearer token is required",
                          headers={"WWW-Authenticate": 'Bearer realm="replay"'})
    return None


@app.page("/dead-letters/replay")
class ReplayDeadLetters(web.View):
    """POST: send the chosen dead letters' original bytes back to their source topics.
    Parameters as for GET /dead-letters (query string or JSON body), plus dry_run=true;
    default limit 1000. Needs `Authorization: Bearer <APP_REPLAY_TOKEN>`."""

    async def post(self, request: web.Request) -> web.Response:
        refused = _token_error(self, request)
        if refused is not None:
            return refused
        params: dict[str, Any] = dict(request.query)
        raw = await self.read_request_content(request)
        if raw.strip():
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                return self.error(400, "the body must be a JSON object")
            if not isinstance(body, Mapping):
                return self.error(400, "the body must be a JSON object")
            params.update(body)
        dry_run = str(params.get("dry_run", "false")).lower() in ("1", "true", "yes")
        try:
            selection = replay.selection_from(params, datetime.now(timezone.utc), default_limit=1000)
        except ValueError as exc:
            return self.error(400, str(exc))
        try:
            rows = await replay.find(app.resources.dead_letter_store, selection)
            if dry_run:
                return self.json({"dry_run": True, "selection": _describe(selection), "would_replay": len(rows),
                                  "dead_letters": [_dead_letter_json(r) for r in rows]})
            sent = await replay.send_back(app.producer, rows, store=app.resources.dead_letter_store)
        except TransientError as exc:
            return _unavailable(self, exc)
        log.warning("replayed %d dead letters over HTTP (%s)", sent, _describe(selection))
        return self.json({"dry_run": False, "selection": _describe(selection), "replayed": sent})
