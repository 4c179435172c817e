"""The one faust.App. Run with: faust -L uvloop -A app.main worker -l info
(uvloop: less worker CPU per event than asyncio's loop; the README's benchmark has the figures)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Optional

import faust
from faust.types import TopicT
from mode import ServiceT
from mode.utils.objects import cached_property

from app import membership, preflight
from app.observability import Observability
from app.resources import Resources
from app.stalls import Watchdog
from app.web.health import Health
from app.faust_repairs.consumer import FlowControl, PartitionAssignor, Transport
from app.kafka_security import broker_credentials, check_broker_access
from app.logs import apply_level, logging_config
from app.retry import in_outage
from app.settings import load_or_exit
from app.tuning import WORKER_TUNING, RawSchema

settings = load_or_exit()



class App(faust.App):
    """faust's App, repaired (app/faust_repairs/), owning the app's own Services as attributes:
    `resources` (adapters, outputs, batch progress, migrations), `observability` (lag, rates,
    /stats), `watchdog` (stuck partitions) and `health` (/health, /ready). In a worker they are
    started in that order around faust's own services (resources first, watchdog last) and
    stopped in reverse; a command uses `async with app.resources`."""

    # faust-streaming's faults that lose or strand records, repaired: app/faust_repairs/consumer.py
    offset_gaps = settings.kafka_offset_gaps
    fetch_max_wait_ms = settings.kafka_fetch_max_wait_ms

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.raw_topics: list[TopicT] = []
        self.fencing: Optional[membership.Fencing] = None   # a shared instance id, when one is set

    def _new_transport(self) -> Any:
        return Transport(self.conf.broker_consumer, self)

    @cached_property
    def flow_control(self) -> FlowControl:
        return FlowControl(loop=self.loop)

    @cached_property
    def resources(self) -> Resources:
        return Resources(self, settings, beacon=self.beacon)

    @cached_property
    def health(self) -> Health:
        return Health(self, settings, self.resources)

    @cached_property
    def observability(self) -> Observability:
        return Observability(self, settings, self.health, self.resources.progress, beacon=self.beacon)

    @cached_property
    def watchdog(self) -> Watchdog:
        return Watchdog(self, settings.stall_check_s, beacon=self.beacon)

    async def batches_done(self, timeout: float) -> bool:
        """Whether the agents' batches in progress were processed and acked within `timeout`
        seconds (during a rebalance, which holds new batches back: repair (7) waits for this
        before it commits); False at once while an outage is waited out."""
        return await self.resources.progress.settled(timeout, in_outage)

    def on_init_dependencies(self) -> Iterable[ServiceT]:
        faust_own = list(super().on_init_dependencies())
        if self.producer_only or self.client_only:       # commands: they open what they use
            return faust_own
        return [self.resources, self.observability, *faust_own, self.watchdog]

    def raw_topic(self, *names: str) -> TopicT:
        """A topic of the app, declared (with its partition count) at start when missing.
        Values stay bytes: decoding is the pipeline's first stage, so that bad bytes can be
        dead-lettered exactly as they arrived instead of crashing the deserializer."""
        topic = self.topic(*names, schema=RawSchema(key_type=bytes, value_type=bytes, key_serializer="raw",
                                                    value_serializer="raw"),
                           partitions=settings.topic_partitions, internal=True)
        self.raw_topics.append(topic)
        return topic

    async def on_first_start(self) -> None:
        # Versions, package files, data directory: one line and exit 78 when one is wrong,
        # before faust creates its directories or anything connects.
        preflight.run_or_exit(settings, Path(self.conf.datadir))
        await super().on_first_start()
        apply_level(settings)      # the worker CLI's `-l` set up logging just before this
        if self.fencing is None:
            self.fencing = membership.install(settings.kafka_group_instance_id, settings.kafka_fenced_health_s)
        # Before faust's producer and consumer connect: refused credentials or an untrusted
        # certificate end the process with one line instead of a traceback.
        await check_broker_access(settings)
        # Every topic of the app (app/topics.py, imported by the agents), before the consumer
        # subscribes: a topic created after the subscription may go unseen until the next
        # metadata refresh.
        for topic in self.raw_topics:
            await topic.maybe_declare()


app = App(
    settings.id,
    broker=settings.kafka_brokers,
    broker_credentials=broker_credentials(settings),
    store=settings.store,
    datadir=settings.data_dir or str(Path("var") / settings.id),   # created at start, never at import
    autodiscover=["agents", "app.commands", "app.web.views"],
    origin="app",
    topic_partitions=settings.topic_partitions,
    topic_replication_factor=settings.topic_replicas,
    topic_allow_declare=True,
    web_bind=settings.web_host,
    web_host=settings.advertised_host,
    web_port=settings.web_port,
    web_enabled=True,
    web_tables_enabled=settings.web_tables_enabled,   # off unless asked for: they show table data
    logging_config=logging_config(settings),
    **{**WORKER_TUNING, "producer_linger": settings.kafka_producer_linger_ms / 1000},   # app/tuning.py
    producer_max_request_size=settings.kafka_max_request_bytes,
    cython_optimizations=settings.faust_cython_optimizations,
    broker_session_timeout=settings.kafka_session_timeout_s,
    broker_commit_interval=settings.kafka_commit_interval_s,
    # Static membership when set (faust hands it to aiokafka's consumer, which then sends no
    # LeaveGroup on stop): a restarted worker rejoins as itself and gets its partitions back.
    consumer_group_instance_id=settings.kafka_group_instance_id or None,
    PartitionAssignor=PartitionAssignor,     # a static member back at another URL (app/faust_repairs/consumer.py)
    broker_heartbeat_interval=min(3.0, settings.kafka_session_timeout_s / 3),
)
