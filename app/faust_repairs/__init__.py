"""Repairs to faust-streaming's faults, written for faust-streaming 0.15.3, mode-streaming 0.7.1
and aiokafka 0.14.0 (the versions app/preflight.py insists on: each repair overrides a private
method of exactly these versions).

- `consumer.py`: the consumer faults that lost or stranded records around starts and
  rebalances (flow control emptying the stream queues, partitions without a commit not
  repositioned, gaps taken for processed offsets, the seek at the end of a recovery racing
  the fetcher, the fixed 1.5 s fetch hold that stalls busy partitions behind idle ones, the
  acked work a rebalance forgets to commit, the four tasks the drainer races per record) and the
  assignor's assertion that hangs a static member back at another URL.
  Each fault is described there, with how it was found.
- `rocksdb.py`: faust's RocksDB store asserting a current event on every table write.

The upstream threads on the same faults, for whoever upgrades:
faust-streaming issues #216 (recovery resumes before seeking) and PR #217 (its fix),
#253 (stop fetching when flow stops), #256, #596, #606 (wrong commit in case of gaps) and
PR #707 (never commit past an in-flight message, open); aiokafka #1003 (`seek_to_committed`
skips a committed offset of 0). https://github.com/faust-streaming/faust/issues/N,
https://github.com/aio-libs/aiokafka/issues/1003.

The watchdog that rewinds a partition whose commit point is stuck anyway is not a repair
but the net under them: app/stalls.py.
"""
