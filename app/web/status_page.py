"""The HTML status page: throughput, lag and dead letters at a glance (no JavaScript)."""
from __future__ import annotations

from datetime import datetime, timezone
from html import escape
from typing import Any, Iterable, Mapping, Optional

REFRESH_S = 5

STYLE = """
body{font:14px/1.4 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#1d2733;background:#f4f6f8}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:22px 0 8px}h3{font-size:14px;margin:14px 0 6px}
.sub{color:#5b6b7b;margin-bottom:16px}
.badge{display:inline-block;padding:2px 10px;border-radius:12px;font-weight:600;color:#fff;font-size:13px}
.ok{background:#2e8540}.bad{background:#c62828}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{background:#fff;border-radius:8px;padding:10px 14px;min-width:136px;box-shadow:0 1px 2px #0002}
.card .v{font-size:26px;font-weight:600}.card .k{color:#5b6b7b;font-size:12px;text-transform:uppercase}
table{border-collapse:collapse;background:#fff;box-shadow:0 1px 2px #0002;min-width:420px}
th,td{padding:5px 12px;text-align:left;border-bottom:1px solid #e3e7eb}th{background:#eef1f4;font-weight:600}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.bar{background:#e57373;height:10px;border-radius:2px}
.grid{display:flex;flex-wrap:wrap;gap:24px}.muted{color:#8795a1}
a{color:#1565c0}
"""


def _num(value: Optional[float], digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.{digits}f}"


def _card(label: str, value: str) -> str:
    return f'<div class="card"><div class="k">{escape(label)}</div><div class="v">{value}</div></div>'


def _badge(ready: bool) -> str:
    return f'<span class="badge {"ok" if ready else "bad"}">{"READY" if ready else "NOT READY"}</span>'


def _dead_letters(by_reason: Mapping[str, int]) -> str:
    if not by_reason:
        return '<p class="muted">No dead letters stored by this worker since it started.</p>'
    top = max(by_reason.values())
    rows = "".join(
        f'<tr><td>{escape(reason)}</td><td class="n">{n:,}</td>'
        f'<td style="width:160px"><div class="bar" style="width:{max(2, round(150 * n / top))}px"></div></td></tr>'
        for reason, n in by_reason.items())
    return f"<table><tr><th>reason</th><th>count</th><th></th></tr>{rows}</table>"


def _lag(partitions: Iterable[Mapping[str, Any]]) -> str:
    """Per topic: partitions, total and largest lag; then the partitions that lag, if any."""
    by_topic: dict[str, list[Mapping[str, Any]]] = {}
    for p in partitions:
        by_topic.setdefault(p["topic"], []).append(p)
    if not by_topic:
        return '<p class="muted">No partitions assigned.</p>'
    rows = "".join(
        f'<tr><td>{escape(topic)}</td><td class="n">{", ".join(str(p["partition"]) for p in ps)}</td>'
        f'<td class="n">{sum(p["lag"] for p in ps):,}</td><td class="n">{max(p["lag"] for p in ps):,}</td></tr>'
        for topic, ps in sorted(by_topic.items()))
    table = ("<table><tr><th>topic</th><th>partitions</th><th>lag</th><th>largest</th></tr>"
             f"{rows}</table>")
    lagging = sorted((p for ps in by_topic.values() for p in ps if p["lag"]), key=lambda p: -p["lag"])[:10]
    if lagging:
        table += ("<h3>Partitions behind</h3><table><tr><th>topic</th><th>partition</th><th>end offset</th>"
                  "<th>committed</th><th>lag</th></tr>" + "".join(
                      f'<tr><td>{escape(p["topic"])}</td><td class="n">{p["partition"]}</td>'
                      f'<td class="n">{p["end_offset"]:,}</td><td class="n">{p["committed_offset"]:,}</td>'
                      f'<td class="n">{p["lag"]:,}</td></tr>' for p in lagging) + "</table>")
    return table


def _workers(workers: Iterable[Mapping[str, Any]]) -> str:
    rows = []
    for w in workers:
        stats = w.get("stats")
        if stats is None:
            rows.append(f'<tr><td>{escape(w["url"])}</td><td colspan="6" class="muted">'
                        f'unreachable: {escape(str(w.get("error", "")))}</td></tr>')
            continue
        rows.append(
            f'<tr><td>{escape(w["url"])}{" (this one)" if w.get("self") else ""}</td>'
            f'<td>{_badge(stats["ready"]["ready"])}</td>'
            f'<td class="n">{_num(stats["recent"]["events_in_per_s"])}</td>'
            f'<td class="n">{_num(stats["recent"]["forwarded_per_s"])}</td>'
            f'<td class="n">{_num(stats["consumer_lag"]["total"])}</td>'
            f'<td class="n">{_num(stats["dead_letters"]["total"])}</td>'
            f'<td class="n">{len(stats["consumer_lag"]["partitions"])}</td></tr>')
    return ("<table><tr><th>worker</th><th>state</th><th>events in/s</th><th>forwarded/s</th><th>lag</th>"
            f"<th>dead letters</th><th>partitions</th></tr>{''.join(rows)}</table>")


def _seconds(bound: Optional[float]) -> str:
    if bound is None:
        return "–"
    return f"≤ {1000 * bound:,.0f} ms" if bound < 1 else f"≤ {bound:g} s"


def render(stats: Mapping[str, Any], workers: Iterable[Mapping[str, Any]] = ()) -> str:
    """The page for one worker's `/stats` body, and the group's workers when known."""
    ready = stats["ready"]
    failing = [f'{escape(name)}: {escape(check["detail"])}' for name, check in ready["checks"].items()
               if not check["ok"]]
    r = stats["recent"]
    cache_ratio = stats["cache"]["hit_ratio"]
    worker = stats["worker"]
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    total_in = sum(sum(v.values()) for v in stats["events_in"].values())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="{REFRESH_S}">
<title>txpipe status · {escape(worker["id"])}</title><style>{STYLE}</style></head>
<body>
<h1>txpipe · {escape(worker["app_id"])} {_badge(ready["ready"])}</h1>
<div class="sub">worker {escape(worker["id"])} at {escape(worker["url"])} · up {_num(worker["uptime_s"], 0)} s ·
{now} · refreshes every {REFRESH_S} s{"<br>" + "<br>".join(failing) if failing else ""}</div>
<div class="cards">
{_card("events in / s", _num(r["events_in_per_s"]))}
{_card("forwarded / s", _num(r["forwarded_per_s"]))}
{_card("dead-lettered / s", _num(r["dead_lettered_per_s"]))}
{_card("consumer lag", _num(stats["consumer_lag"]["total"]))}
{_card("e2e latency p99", _seconds(r["e2e_p99_at_most_s"]))}
{_card("cache hit ratio", "–" if cache_ratio is None else f"{100 * cache_ratio:.1f} %")}
</div>
<p class="muted">This worker, over the last {_num(r["window_s"], 0)} s; since it started: {total_in:,} events in,
{stats["dead_letters"]["total"]:,} dead letters stored.</p>
<h2>Workers in the group</h2>{_workers(workers)}
<div class="grid">
<div><h2>Dead letters per reason</h2>{_dead_letters(stats["dead_letters"]["by_reason"])}</div>
<div><h2>Consumer lag</h2>{_lag(stats["consumer_lag"]["partitions"])}</div>
</div>
<p class="muted"><a href="/stats">/stats</a> · <a href="/metrics">/metrics</a> · <a href="/ready">/ready</a> ·
<a href="/dead-letters">/dead-letters</a></p>
</body></html>
"""
