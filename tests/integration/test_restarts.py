"""Restarts with static group membership (APP_KAFKA_GROUP_INSTANCE_ID): a worker that comes
back as itself takes its own partitions back at once, and nobody else's move meanwhile."""
from __future__ import annotations

import asyncio
import collections
import itertools
import json
import time
import urllib.error
import urllib.request
from typing import Any

from app.kafka_tools import read_all
from app.commands.samples.transactions import samples
from models.transaction import CATEGORIES
from tests.integration.pipeline import output_count, produce
from devtools.processes import Worker, free_port, wait_until
from tests.integration.test_transactions_pipeline import check_outcomes_after_restart

PAUSE_LIMIT_S = 5.0
FENCED_LINE = "is in use by another worker"
# The group's own lines in a worker's log (aiokafka's coordinator and faust's assignor):
# one of them after a worker's first assignment means its partitions were dealt again.
REBALANCE_LINES = ("Revoking previously assigned partitions", "Joined group", "Elected group leader")


async def sink_times(settings: Any) -> dict[int, list[float]]:
    """Per input partition, when its records reached a sink (the worker producer's CreateTime, s)."""
    times: dict[int, list[float]] = collections.defaultdict(list)
    for category in CATEGORIES:
        for record in await read_all(settings.kafka_brokers, settings.sink_topic(category)):
            times[int(dict(record.headers)["source-partition"])].append(record.timestamp / 1000)
    return {p: sorted(ts) for p, ts in times.items()}


def pauses(times: dict[int, list[float]], start: float, end: float) -> dict[int, float]:
    """Per input partition, the longest time without output between `start` and `end`."""
    out = {}
    for partition, ts in times.items():
        inside = [start] + [t for t in ts if start < t < end] + [end]
        out[partition] = max(b - a for a, b in itertools.pairwise(inside))
    return out


def rebalance_lines(worker: Worker, since: int) -> list[str]:
    text = worker.log_path.read_bytes()[since:].decode(errors="replace")
    return [line for line in text.splitlines() if any(marker in line for marker in REBALANCE_LINES)]


def test_a_killed_worker_restarted_at_once_as_itself_resumes_within_seconds(
        workers: Any, settings: Any, accounts: int, event_loop_run: Any) -> None:
    """SIGKILL leaves no LeaveGroup behind; without an instance id the new worker waits for the
    dead member's session to expire (APP_KAFKA_SESSION_TIMEOUT_S, 30 s). With one it takes the
    dead member's place at once."""
    data = samples(12_000, bad_ratio=0.03, accounts=1000, seed=43)
    me = {"APP_KAFKA_GROUP_INSTANCE_ID": "worker-a", "APP_WEB_PORT": str(free_port())}
    first = workers(**me).start()
    killed_at = ready_at = 0.0

    async def scenario() -> None:
        nonlocal killed_at, ready_at
        sending = asyncio.ensure_future(produce(settings, data, pace=(200, 0.2)))
        await wait_until(lambda: _at_least(settings, 3000), 60, "a part of the stream processed")
        first.kill()
        killed_at = time.time()
        assert not sending.done(), "the input ran out before the kill: nothing to resume"
        # In a thread: the input keeps flowing meanwhile.
        replacement = await asyncio.to_thread(workers(**me).start)
        ready_at = time.time()
        await sending
        print(f"replacement ready {ready_at - killed_at:.1f} s after the kill")
        assert "seeking back" not in replacement.log_path.read_text(errors="replace")
        assert FENCED_LINE not in replacement.log_path.read_text(errors="replace"), "its own id taken for a twin's"

    event_loop_run(scenario())
    check_outcomes_after_restart(settings, data, accounts, event_loop_run, timeout_s=120)
    output = event_loop_run(sink_times(settings))
    resumed = {p: next(t for t in ts if t > killed_at) - killed_at for p, ts in sorted(output.items())}
    print("output resumed, per input partition, s after the kill:", {p: round(s, 1) for p, s in resumed.items()})
    assert len(resumed) == settings.topic_partitions
    up_s = ready_at - killed_at   # the replacement's own start-up: 2-5 s on the shared 2-core machine
    # Output as soon as the replacement is up: nothing waits for the group.
    assert min(resumed.values()) - up_s < PAUSE_LIMIT_S, "the output did not resume once it was up"
    # Every partition long before the dead member's session would have expired (without an
    # instance id nothing resumes before then). The last partitions wait for the backlog of the
    # seconds it was down, read at the replacement's own pace, not for the group.
    assert max(resumed.values()) < settings.kafka_session_timeout_s * 0.7, resumed


def test_a_rolling_restart_of_one_of_two_workers_moves_no_other_partition(
        workers: Any, settings: Any, accounts: int, event_loop_run: Any) -> None:
    """SIGTERM one of two workers under load and start it again at once: with instance ids there
    is no LeaveGroup and no rebalance, so the other worker keeps its partitions untouched (their
    output never pauses), and the restarted one takes its own back as soon as it is up (they
    wait for it while it is down: that is what static membership means)."""
    data = samples(30_000, bad_ratio=0.03, accounts=1000, seed=47)
    steady = workers(APP_KAFKA_GROUP_INSTANCE_ID="worker-a").start()
    moving = workers(APP_KAFKA_GROUP_INSTANCE_ID="worker-b").start()
    times = {"sigterm": 0.0, "ready": 0.0, "end": 0.0}
    mark = 0
    theirs: set[int] = set()

    async def scenario() -> None:
        nonlocal mark, theirs
        sending = asyncio.ensure_future(produce(settings, data, pace=(200, 0.2)))
        await wait_until(lambda: _at_least(settings, 3000), 60, "the stream to flow through both")
        await asyncio.sleep(2)    # the group settled after the second worker's join
        theirs = await asyncio.to_thread(partitions_of, steady, moving)
        assert theirs and len(theirs) < settings.topic_partitions, theirs
        mark = steady.log_path.stat().st_size
        times["sigterm"] = time.time()
        # In threads: the input keeps flowing meanwhile.
        assert await asyncio.to_thread(moving.stop) == 0
        stopped_s = time.time() - times["sigterm"]
        await asyncio.to_thread(moving.start)
        times["ready"] = time.time()
        print(f"stopped in {stopped_s:.1f} s, ready again {times['ready'] - times['sigterm']:.1f} s after "
              "the SIGTERM")
        await asyncio.sleep(PAUSE_LIMIT_S + 3)
        times["end"] = time.time()
        assert not sending.done(), "the input ran out during the restart: nothing to measure"
        await sending

    event_loop_run(scenario())
    check_outcomes_after_restart(settings, data, accounts, event_loop_run, timeout_s=120)
    assert rebalance_lines(steady, mark) == [], "the other worker's partitions were dealt again"
    output = event_loop_run(sink_times(settings))
    longest = pauses(output, times["sigterm"], times["end"])
    print("longest pause per input partition:", {p: round(s, 1) for p, s in sorted(longest.items())},
          "restarted worker's:", sorted(theirs))
    assert max(s for p, s in longest.items() if p not in theirs) < PAUSE_LIMIT_S, longest
    everything = {-1: sorted(t for ts in output.values() for t in ts)}
    assert pauses(everything, times["sigterm"], times["end"])[-1] < PAUSE_LIMIT_S, "the group's output paused"
    for p in theirs:
        back = next(t for t in output[p] if t > times["sigterm"]) - times["ready"]
        print(f"partition {p}: output {back:+.1f} s after the restarted worker was ready")
        assert back < PAUSE_LIMIT_S


def partitions_of(asked: Worker, owner: Worker) -> set[int]:
    """The input partitions `owner` processes, as the group's assignment (faust's /router/,
    where the accounts cache is partitioned like the input) is known to `asked`."""
    with urllib.request.urlopen(f"http://127.0.0.1:{asked.env['APP_WEB_PORT']}/router/", timeout=10) as answer:
        routes = json.loads(answer.read())
    port = f":{owner.env['APP_WEB_PORT']}"
    return {p for url, topics in routes.items() if url.rstrip("/").endswith(port)
            for name, partitions in topics.items() if name.endswith("accounts-cache-changelog")
            for p in partitions}


async def _at_least(settings: Any, n: int) -> bool:
    return await output_count(settings) >= n



def http_status(worker: Worker, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{worker.env['APP_WEB_PORT']}{path}", timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


def test_two_workers_given_one_instance_id_say_so_and_fail_ready_then_health(
        workers: Any, settings: Any, accounts: int, event_loop_run: Any) -> None:
    """A group instance id given to two workers: the broker drops one member whenever the other
    joins (aiokafka: UnknownMemberId), again and again. Each worker says so in one error line,
    fails /ready, and /health once it has lasted APP_KAFKA_FENCED_HEALTH_S."""
    same = {"APP_KAFKA_GROUP_INSTANCE_ID": "worker-twin", "APP_KAFKA_FENCED_HEALTH_S": "20"}
    first = workers(**same).start()
    assert http_status(first, "/health")[0] == 200
    second = workers(**same).start()
    twins = (first, second)

    def fenced() -> list[Worker]:
        return [w for w in twins if FENCED_LINE in w.log_path.read_text(errors="replace")]

    event_loop_run(wait_until(lambda: len(fenced()) == 2, 120, "both workers saying that their id is in use"))
    for w in twins:
        lines = [line for line in w.log_path.read_text(errors="replace").splitlines() if FENCED_LINE in line]
        assert len(lines) == 1 and "[ERROR]" in lines[0] and "worker-twin" in lines[0], lines
        status, body = http_status(w, "/ready")
        assert status == 503 and not body["checks"]["group_membership"]["ok"], body
        assert "in use by another worker" in body["checks"]["group_membership"]["detail"]
    event_loop_run(wait_until(lambda: all(http_status(w, "/health")[0] == 503 for w in twins), 60,
                              "/health failing on both"))
    print({w.log_path.name: http_status(w, "/health")[1] for w in twins})


def test_a_worker_joining_a_busy_one_makes_it_replay_nothing(
        workers: Any, settings: Any, accounts: int, event_loop_run: Any) -> None:
    """Scale out: a second worker joins while the first works through a backlog. The first
    finishes and acks its batch in progress, commits, and only then lets its partitions be
    dealt again (repair 7 in app/faust_repairs/consumer.py); a batch it had taken but not begun
    is dropped after the rebalance, which seeks its partitions back to the commit point
    (app/batching.py). So every input comes out once. The periodic commit is set far apart, so
    that without the commit the first worker's 3,000+ events before the join would be replayed,
    and without the wait or the drop its batch of up to APP_BATCH_SIZE."""
    data = samples(20_000, bad_ratio=0.0, accounts=1000, seed=53)
    rare_commits = {"APP_KAFKA_COMMIT_INTERVAL_S": "60"}
    workers(**rare_commits).start()
    event_loop_run(produce(settings, data))
    event_loop_run(wait_until(lambda: _at_least(settings, 3000), 120, "a part of the backlog processed"))
    workers(**rare_commits).start()
    check_outcomes_after_restart(settings, data, accounts, event_loop_run, timeout_s=180)
    copies: collections.Counter[tuple[int, int]] = collections.Counter()
    for category in CATEGORIES:
        for record in event_loop_run(read_all(settings.kafka_brokers, settings.sink_topic(category))):
            headers = dict(record.headers)
            copies[(int(headers["source-partition"]), int(headers["source-offset"]))] += 1
    replayed = sum(n - 1 for n in copies.values())
    print(f"replayed after the join: {replayed:,} of {len(copies):,} (batch size {settings.batch_size})")
    assert replayed == 0, "events processed twice across the scale-out"
