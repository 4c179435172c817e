"""Results of bench/pipeline.py: markdown table, JSON, PNG plot, py-spy profile summary."""
from __future__ import annotations

import collections
import json
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BORING = ("BaseEventLoop.run", "BaseEventLoop._run_once", "Handle._run", "Thread.", "Worker.execute_from",
          "pass_context", "<module>", "Command.", "Group.invoke", "Context.invoke", "WorkerThread.run",
          "ServiceThread._start_thread")
TARGETS = {"vs_passthrough": 0.5, "vs_baseline": 10.0, "pg_per_1000_warm": 1.0, "rss_mb": 300}


def _frame(raw: str) -> str:
    """'func (/path/site-packages/pkg/mod.py:12)' -> 'func (pkg/mod.py)'."""
    m = re.match(r"(.*) \((.*?)(?::\d+)?\)$", raw.strip())
    if not m:
        return raw.strip()
    func, path = m.groups()
    for marker in ("site-packages/", str(ROOT) + "/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{func} ({path})"


def profile_summary(raw_path: Path, top: int = 12) -> dict[str, Any]:
    """Self (leaf) and inclusive shares of the non-idle samples, per function."""
    self_n: collections.Counter[str] = collections.Counter()
    incl_n: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw_path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        if "libevreactor" in stack:
            thread = "CQL driver I/O thread (libev)"
        elif "ServiceThread._start_thread" in stack:
            thread = "faust consumer thread (aiokafka fetcher)"
        elif "<module> (" in frames[0]:
            thread = "main thread (event loop: agents, producer)"
        else:
            thread = "other threads"
        frames = [_frame(f) for f in frames]
        total += n
        threads[thread] += n
        self_n[frames[-1]] += n
        for f in set(frames):
            if not f.startswith(BORING):
                incl_n[f] += n
    return {"samples": total,
            "self": [(f, n / total) for f, n in self_n.most_common(top)],
            "inclusive": [(f, n / total) for f, n in incl_n.most_common(40)],
            "threads": [(t, n / total) for t, n in threads.most_common(5)]}


def fmt(x: float, digits: int = 0) -> str:
    return f"{x:,.{digits}f}"


FULL = ("passthrough", "baseline", "cold_1w", "warm_1w", "warm_2w", "latency", "sales", "avro")


def checks_note(x: dict[str, Any]) -> str:
    """The pass's correctness checks (bench/pipeline.py Bench.check), in a few words."""
    c = x.get("checks")
    if not c:
        return ""
    if c["ok"]:
        extra = "; sink records equal to txpipe's" if "differs_from_txpipe" in c else ""
        return (f"; checks OK: {c['inputs']:,} in, each out once, {c['history_by_event']:,} + "
                f"{c['history_by_account']:,} history rows for {c['good']:,} good events{extra}")
    return "; checks FAILED: " + ", ".join(f"{k} {v:,}" for k, v in c.items() if k != "ok")


def rows_of(r: dict[str, Any]) -> list[tuple[str, dict[str, Any], str]]:
    """(label, figures, notes) of every contender the run has, in the order they ran."""
    w = r.get("warm_1w", {})
    rows: list[tuple[str, dict[str, Any], str]] = []
    if "passthrough" in r:
        p = r["passthrough"]
        rows.append(("Passthrough ceiling (raw aiokafka consume→produce, 1 process)", p, f"{p['events']:,} events"))
    if "baseline" in r:
        b = r["baseline"]
        rows.append(("Baseline, seeds' style (per event: 1 query + sync CQL insert + send_and_wait)", b,
                     f"{b['events']:,} events (time-boxed)"))
    if "faust_ceiling" in r:
        rows.append(("faust ceiling (the pipeline's worker machinery forwarding raw bytes, no processing)",
                     r["faust_ceiling"], "bench/faust_ceiling.py, faust's noack_take"))
    if "faust_ceiling_batches" in r:
        rows.append(("faust ceiling, taking batches as the pipeline's agents do (app.batching.batches)",
                     r["faust_ceiling_batches"], "bench/faust_ceiling.py, BENCH_TAKE=batches"))
    if "cold_1w" in r:
        c = r["cold_1w"]
        rows.append(("Pipeline, 1 worker, cold cache", c,
                     f"{c['pg_queries']} account queries = {c['pg_queries_per_1000']:.2f} / 1,000 events"))
    for key, cache in (("quix_1w", "cold"), ("quix_warm_1w", "warm")):
        if key in r:
            q = r[key]
            rows.append((f"Quix Streams 3.28.1, 1 process, {cache} cache (bench/quix/worker.py)", q,
                         f"done (history stored, committed) over the whole span, first output → last commit: "
                         f"{fmt(q['rate_done_whole_span'])}/s; {q['pg_queries']} account "
                         f"queries = {q['pg_queries_per_1000']:.2f} / 1,000 events; commit interval "
                         f"{q.get('commit_interval_s', '?')} s"))
    if "warm_1w" in r:
        rows.append(("Pipeline, 1 worker, warm cache", w,
                     f"{w['pg_queries']} account queries = {w['pg_queries_per_1000']:.2f} / 1,000 events"))
    if "warm_2w" in r:
        w2 = r["warm_2w"]
        rows.append(("Pipeline, 2 workers, warm cache", w2,
                     f"{w2['pg_queries']} account queries; worker CPU = both workers"))
    if "warm_1w_other_loop" in r:
        o = r["warm_1w_other_loop"]
        rows.append((f"Pipeline, 1 worker, warm cache, `-L {o['loop']}`", o,
                     f"the same pass with the other event loop ({o['loop']} vs {w.get('loop', 'aio')})"))
    return rows


def table(r: dict[str, Any]) -> str:
    w = r.get("warm_1w", r.get("cold_1w", {}))
    def cells(x: dict[str, Any]) -> str:
        return " | ".join(fmt(x.get(k, float("nan"))) for k in
                          ("cassandra_cpu_us", "kafka_cpu_us", "postgres_cpu_us", "machine_busy_cpu_us"))

    def rewinds(x: dict[str, Any]) -> str:
        n = x.get("stall_recoveries", 0)
        return f"; {n} stuck partition(s) rewound by the watchdog (duplicates counted)" if n else ""

    bad = r.get("bad_events", 0)
    content = (f"{bad:,} of them bad (app.commands.samples.transactions' kinds: dead letters)" if bad else "all valid")
    out = [f"Run `{r['run']}`: {r['events']:,} events per pass ({r['mean_event_bytes']} B JSON/base64, "
           f"45 fields, {content}, 1,000 accounts of which 20 blocked: enriched with their status, "
           f"not dead-lettered), {r['partitions']} partitions, {r['cpus']} CPUs shared with Kafka, Cassandra "
           f"and PostgreSQL, Python {r['python']}, worker event loop `{w.get('loop', 'aio')}` unless said. "
           "Events/s: 5th→95th percentile of output timestamps. CPU µs per event: "
           "the contender's process(es); then each server of the stack, and the whole machine "
           "(all cores, everything running) over the same pass.", "",
           "| contender | events/s | CPU µs/event | Cassandra µs/ev | Kafka µs/ev | PostgreSQL µs/ev "
           "| machine µs/ev | notes |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    out += [f"| {a} | {fmt(x['rate'])} | {fmt(x['cpu_us'])} | {cells(x)} | {d}{rewinds(x)}{checks_note(x)} |"
            for a, x, d in rows_of(r)]
    pairs = [(q, t, cache) for q, t, cache in (("quix_1w", "cold_1w", "cold"), ("quix_warm_1w", "warm_1w", "warm"))
             if q in r]
    if pairs:
        out += ["", "| Quix Streams contender against txpipe (same cache state) | value |", "|---|---:|"]
        for q, t, cache in pairs:
            if t in r:
                whole = r[t]["events"] / r[t]["span_s"]       # first to last output: history already stored
                out += [f"| txpipe / Quix, {cache} cache, events/s (5th→95th percentile of output timestamps) "
                        f"| {r[t]['rate'] / r[q]['rate']:.2f}× |",
                        f"| txpipe / Quix, {cache} cache, events/s over the whole span, first output → all done "
                        f"| {whole / r[q]['rate_done_whole_span']:.2f}× ({fmt(whole)} / "
                        f"{fmt(r[q]['rate_done_whole_span'])}) |",
                        f"| Quix / txpipe, {cache} cache, CPU µs per event | "
                        f"{r[q]['cpu_us'] / r[t]['cpu_us']:.2f}× |"]
            if "passthrough" in r:
                out += [f"| Quix ({cache} cache) / passthrough, events/s | "
                        f"{r[q]['rate'] / r['passthrough']['rate']:.2f}× |"]
            out += [f"| Quix worker peak RSS (VmHWM), {cache} cache | {r[q]['vmhwm_mb'][0]} MB |"]
    out += goals_14(r)
    if not all(k in r for k in FULL):
        return "\n".join(out)
    p, b, c, w, w2 = r["passthrough"], r["baseline"], r["cold_1w"], r["warm_1w"], r["warm_2w"]
    lat, s, av = r["latency"], r["sales"], r["avro"]
    best = max(w["rate"], w2["rate"])
    out += ["", "| measure | value | target | met? |", "|---|---:|---:|---|"]
    r_pass, r_base = w["rate"] / p["rate"], w["rate"] / b["rate"]
    cpu_pass, cpu_base = p["cpu_us"] / w["cpu_us"], b["cpu_us"] / w["cpu_us"]
    rss = c["vmhwm_mb"][0]
    out += [
        f"| pipeline (1 worker, warm) / passthrough, events/s | {r_pass:.2f}× | ≥ 0.5× | "
        f"{'met' if r_pass >= 0.5 else 'NOT met'} |",
        f"| same, by CPU per event (passthrough µs / pipeline µs) | {cpu_pass:.2f}× | | |",
        f"| pipeline (1 worker, warm) / baseline, events/s | {r_base:.1f}× | ≥ 10× | "
        f"{'met' if r_base >= 10 else 'NOT met'} |",
        f"| same, by CPU per event (baseline µs / pipeline µs) | {cpu_base:.1f}× | | |",
        f"| best pipeline (2 workers: {fmt(w2['rate'])}/s) / passthrough | {best / p['rate']:.2f}× | | |",
        *([f"| faust ceiling / passthrough, events/s (what faust itself costs) | "
           f"{r['faust_ceiling']['rate'] / p['rate']:.2f}× | | by CPU: "
           f"{p['cpu_us'] / r['faust_ceiling']['cpu_us']:.2f}× |",
           f"| pipeline (1 worker, warm) / faust ceiling, events/s (what the processing costs) | "
           f"{w['rate'] / r['faust_ceiling']['rate']:.2f}× | | by CPU: "
           f"{r['faust_ceiling']['cpu_us'] / w['cpu_us']:.2f}× |"] if "faust_ceiling" in r else []),
        f"| PostgreSQL account queries per 1,000 events, warm cache | {w['pg_queries_per_1000']:.2f} | ≤ 1 | "
        f"{'met' if w['pg_queries_per_1000'] <= 1 else 'NOT met'} |",
        f"| PostgreSQL account queries per 1,000 events, cold cache | {c['pg_queries_per_1000']:.2f} | | |",
        f"| worker peak RSS (VmHWM) after {c['events']:,} events | {rss} MB | ≤ 300 MB | "
        f"{'met' if rss <= 300 else 'NOT met'} |",
        f"| same worker after warm pass + latency + sales | {w.get('vmhwm_after_all_mb', '?')} MB | | |",
        f"| end-to-end latency p50 / p99 at {fmt(lat['achieved_rate'])} events/s (½ of max, 1 worker) | "
        f"{lat['p50_ms']:.0f} / {lat['p99_ms']:.0f} ms | | max {lat['max_ms']:.0f} ms, "
        f"{lat['events']:,} events |",
        f"| sales: orders/s end to end ({s['orders']:,} orders, produce → last row) | {fmt(s['orders_per_s'])} | | |",
        f"| sales: rows/s into PostgreSQL (first → last upsert) | {fmt(s['rows_per_s'])} | | "
        f"{s['upserts']} upserts, {s['rows_per_upsert']:.0f} rows each |",
        f"| Avro decode, fastavro ({av['case']}) | {fmt(av['fastavro']['rate'])}/s | | "
        f"{av['fastavro']['cpu_us']:.1f} CPU µs/event |",
        f"| Avro decode, avro | {fmt(av['avro']['rate'])}/s | | {av['avro']['cpu_us']:.1f} CPU µs/event |",
    ]
    return "\n".join(out)


def goals_14(r: dict[str, Any]) -> list[str]:
    """Issue 14's goals, each with its figure from this run (those the run measured)."""
    rows = []

    def row(what: str, value: float, fmt_: str, target: str, met: bool) -> None:
        rows.append(f"| {what} | {fmt_.format(value)} | {target} | {'met' if met else 'NOT met'} |")
    if "warm_1w" in r and "quix_warm_1w" in r:
        x = r["warm_1w"]["cpu_us"] / r["quix_warm_1w"]["cpu_us"]
        row("txpipe / Quix, worker CPU µs per event, warm cache", x, "{:.2f}×", "≤ 0.67× (at least < 1×)", x <= 0.67)
        x = r["warm_1w"]["rate"] / r["quix_warm_1w"]["rate"]
        row("txpipe / Quix, events/s of one worker, warm cache", x, "{:.2f}×", "> 1×", x > 1)
    if "cold_1w" in r and "quix_1w" in r:
        x = r["cold_1w"]["cpu_us"] / r["quix_1w"]["cpu_us"]
        row("txpipe / Quix, worker CPU µs per event, cold cache", x, "{:.2f}×", "≤ 0.67× (at least < 1×)", x <= 0.67)
    if "warm_1w" in r and "faust_ceiling" in r:
        x = r["warm_1w"]["cpu_us"] / r["faust_ceiling"]["cpu_us"]
        row("pipeline / faust ceiling, worker CPU µs per event", x, "{:.2f}×", "≤ 1.6×", x <= 1.6)
    for run in r.get("latency_runs", [r["latency"]] if "latency" in r else []):
        rows.append(f"| latency at {run['target_rate']:,.0f} events/s (achieved {run['achieved_rate']:,.0f}): "
                    f"p50 / p99 | {run['p50_ms']:,.0f} / {run['p99_ms']:,.0f} ms | ≤ 25 / ≤ 100 ms | "
                    f"{'met' if run['p50_ms'] <= 25 and run['p99_ms'] <= 100 else 'NOT met'} |")
    if "sales" in r:
        s = r["sales"]
        row(f"sales rows/s into PostgreSQL ({s['rows_per_upsert']:.0f} rows per upsert)", s["rows_per_s"],
            "{:,.0f}", "≥ 20,000", s["rows_per_s"] >= 20_000)
    if "warm_1w" in r:
        x = r["warm_1w"]["pg_queries_per_1000"]
        row("PostgreSQL queries per 1,000 events, warm", x, "{:.2f}", "≤ 1", x <= 1)
        x = max(r["warm_1w"].get("vmhwm_after_all_mb", 0), *r["warm_1w"]["vmhwm_mb"])
        row("worker peak RSS (VmHWM)", x, "{:.0f} MB", "≤ 300 MB", x <= 300)
    if not rows:
        return []
    return ["", "| issue 14 goal | this run | target | met? |", "|---|---:|---:|---|", *rows]


def plot(r: dict[str, Any], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    bars = [("passthrough", "passthrough", "#888888"), ("faust_ceiling", "faust\nceiling", "#aaaaaa"),
            ("cold_1w", "pipeline\n1w cold", "#4c72b0"), ("quix_1w", "Quix\n1w cold", "#55a868"),
            ("quix_warm_1w", "Quix\n1w warm", "#55a868"),
            ("warm_1w", "pipeline\n1w warm", "#4c72b0"), ("warm_2w", "pipeline\n2w warm", "#4c72b0"),
            ("baseline", "baseline", "#c44e52")]
    keys = [k for k, _, _ in bars if k in r]
    names = [n for k, n, _ in bars if k in r]
    colors = [c for k, _, c in bars if k in r]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    rates = [r[k]["rate"] for k in keys]
    ax1.bar(names, rates, color=colors)
    ax1.set_yscale("log")
    ax1.set_ylabel("events/s (log scale)")
    ax1.set_title(f"Throughput, {r['events']:,} events, 8 partitions")
    for i, v in enumerate(rates):
        ax1.text(i, v, f"{v:,.0f}", ha="center", va="bottom", fontsize=8)
    cpus = [r[k]["cpu_us"] for k in keys]
    ax2.bar(names, cpus, color=colors)
    ax2.set_yscale("log")
    ax2.set_ylabel("CPU µs per event (log scale)")
    ax2.set_title("CPU per event of the working process(es)")
    for i, v in enumerate(cpus):
        ax2.text(i, v, f"{v:,.0f}", ha="center", va="bottom", fontsize=8)
    for ax in (ax1, ax2):
        ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def profile_md(prof: dict[str, Any], what: str = "1-worker process at full load (warm cache)") -> str:
    out = [f"py-spy (--nonblocking, 97 Hz), {prof['samples']:,} samples py-spy counted as non-idle, of the "
           f"{what}. Cython code (scylla-driver, faust's "
           "speedups) has no frames of its own: its time shows as the self time of its Python caller; "
           "`EpollSelector.select` / `LibevLoop._run_loop` leaf time is partly waiting.",
           "", "Threads: " + ", ".join(f"{t} {s:.0%}" for t, s in prof["threads"]), "",
           "| # | function (self time, leaf frames) | share |", "|---|---|---:|"]
    out += [f"| {i} | `{f}` | {s:.1%} |" for i, (f, s) in enumerate(prof["self"], 1)]
    out += ["", "| function (inclusive: on the stack) | share |", "|---|---:|"]
    out += [f"| `{f}` | {s:.1%} |" for f, s in prof["inclusive"]]
    return "\n".join(out)


def write_all(r: dict[str, Any], results: Path) -> None:
    raw = results / "profile.raw.txt"
    prof_text = ""
    if raw.exists() and raw.stat().st_size:
        prof = profile_summary(raw)
        r["profile"] = prof
        prof_text = profile_md(prof)
        (results / "profile.md").write_text(prof_text + "\n")
    faust_raw = results / "profile-faust.raw.txt"
    if faust_raw.exists() and faust_raw.stat().st_size:
        r["profile_faust"] = profile_summary(faust_raw)
        (results / "profile-faust.md").write_text(profile_md(
            r["profile_faust"], "faust ceiling (bench/faust_ceiling.py) over its whole pass") + "\n")
    (results / "pipeline.json").write_text(json.dumps(r, indent=2, default=str) + "\n")
    md = "# Pipeline benchmark (bench/pipeline.py)\n\n" + table(r) + "\n"
    if prof_text:
        md += "\n## Profile\n\n" + prof_text + "\n"
    md += "\n![throughput and CPU per event](pipeline.png)\n"
    (results / "pipeline.md").write_text(md)
    try:
        plot(r, results / "pipeline.png")
    except Exception as exc:  # noqa: BLE001 - the figures are written anyway
        print(f"plot: {exc}")
    print("\n" + table(r))
    if prof_text:
        print("\n" + "\n".join(prof_text.splitlines()[:20]))
    print(f"\nwritten: {results}/pipeline.md, pipeline.json, pipeline.png, profile.md, profile.raw.txt")


if __name__ == "__main__":   # re-render from a saved run: python -m bench.report
    res = Path(__file__).resolve().parent / "results"
    write_all(json.loads((res / "pipeline.json").read_text()), res)
