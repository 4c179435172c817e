"""The worker's way to the broker for its outputs: faust's producer, reached through the
AIOKafkaProducer it runs (the one place that reaches into it)."""
from __future__ import annotations

import logging
from typing import Any, Generator, Optional

import aiokafka
from aiokafka.structs import TopicPartition

log = logging.getLogger(__name__)


class Producer:
    """`send` queues a record and returns, awaited, the future of its delivery; `send_now` lets
    the producer send what it holds without waiting out its linger. Both go to the
    AIOKafkaProducer of faust's producer once it runs: faust's own `send` adds nothing this
    path uses (no transactions, headers already a list) but an `isinstance` against typing's
    Mapping per message, a signal and a wrapper of KafkaError, which
    `outputs.as_outage_or_refusal` classifies the same either way."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._appender: Optional[Appender] = None
        self._checked: Any = None            # the AIOKafkaProducer `_appender` was decided for

    def send(self, topic: str, key: Optional[bytes], value: Optional[bytes], headers: list[tuple[str, bytes]]) -> Any:
        producer = getattr(self.app.producer, "_producer", None)
        if producer is None:        # not started (or not faust's aiokafka driver): faust's own send
            return self.app.producer.send(topic, key, value, None, None, headers)
        if producer is not self._checked:     # once per producer, not per record (Appender.of may log)
            self._checked, self._appender = producer, Appender.of(producer)
        appender = self._appender
        if appender is not None:
            future = appender.append(topic, key, value, headers)
            if future is not None:
                return Queued(future)
        return producer.send(topic, value, key=key, headers=headers)

    def send_now(self) -> None:
        """An agent calls this (through `Outputs.delivered`) once its batch's outputs are all
        queued. The linger (`producer_linger`) is there to fill a produce request; after the
        last output of a batch nothing more of it is coming, and its records would wait the
        linger out for nothing (at a trickle, most of their time on the way to the broker).
        Every open batch of aiokafka's accumulator is made due (its linger 0: it stays open, a
        record queued before the sender takes it still joins it) and the sender woken; the
        sender still sends one request per broker at a time. aiokafka internals (the pinned
        0.14.0): on a release without them, a no-op."""
        accumulator = getattr(getattr(self.app.producer, "_producer", None), "_message_accumulator", None)
        try:
            open_batches = accumulator._batches.values()  # type: ignore[union-attr]
            waiter = accumulator._waiter_future  # type: ignore[union-attr]
        except AttributeError:
            return
        for batches in open_batches:
            for batch in batches:
                batch._linger_time = 0
        if not waiter.done():
            waiter.set_result(None)


class Queued:
    """Awaited, the delivery future of a record already queued: what `AIOKafkaProducer.send`
    returns when awaited, without a coroutine."""

    __slots__ = ("future",)

    def __init__(self, future: Any) -> None:
        self.future = future

    def __await__(self) -> Generator[Any, None, Any]:
        return self.future
        yield  # makes this a generator: __await__ must return an iterator


class Appender:
    """`AIOKafkaProducer.send` for the common case, as a plain call: the topic's partitions
    known, no transaction, a batch of the record's partition open with room for it. The record
    goes where `send` would put it (the producer's partitioner over the same lists of
    partitions), after the same size check (the producer's `_serialize`, which raises what
    `send` raises), into the same batch, and its delivery future is the one `send` returns.
    Without `send`'s three coroutines per record (send, `_wait_on_metadata`, `add_message`), the
    two lists of the topic's partitions it builds per record (here once per metadata update) and
    its debug log call. `append` returns None for anything else (metadata to fetch, a batch to
    start or to wait for, the producer closing or failed): the caller then awaits `send`, which
    does all of it. aiokafka internals of the release this was written for (`of` checks it)."""

    WRITTEN_FOR = "0.14.0"

    def __init__(self, producer: Any) -> None:
        self.producer = producer
        self._accumulator = producer._message_accumulator
        self._partitioner = producer._partitioner
        self._serialize = producer._serialize
        self._topics: dict[str, tuple[Any, list[int], list[int]]] = {}

    @classmethod
    def of(cls, producer: Any, version: str = aiokafka.__version__) -> Optional["Appender"]:
        if version != cls.WRITTEN_FOR:
            log.warning("aiokafka %s, not %s: outputs go through AIOKafkaProducer.send alone", version,
                        cls.WRITTEN_FOR)
            return None
        if (producer._txn_manager is not None or producer._key_serializer is not None
                or producer._value_serializer is not None):
            return None
        return cls(producer)

    def append(self, topic: str, key: Optional[bytes], value: Optional[bytes],
               headers: list[tuple[str, bytes]]) -> Any:
        """The record's delivery future, or None (nothing done: `send` it)."""
        partitions = self.producer.client.cluster._partitions.get(topic)
        if not partitions:
            return None
        known = self._topics.get(topic)
        if known is None or known[0] is not partitions:     # metadata replaces these dicts, never changes them
            known = (partitions, list(set(partitions)),
                     list({p for p, meta in partitions.items() if meta.leader != -1}))
            self._topics[topic] = known
        accumulator = self._accumulator
        if accumulator._closed or accumulator._exception is not None:
            return None
        self._serialize(key, value, headers)         # MessageSizeTooLargeError, as send
        batches = accumulator._batches.get(TopicPartition(topic, self._partitioner(key, known[1], known[2])))
        if not batches:
            return None
        return batches[-1].append(key, value, None, headers=headers)
