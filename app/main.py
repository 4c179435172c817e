"""The one faust.App. Run with: faust -L uvloop -A app.main worker -l info
(uvloop: ~17% less worker CPU per event than asyncio's loop, measured by bench/pipeline.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import faust
from mode.utils.objects import cached_property

from app import preflight
from app.faust_repairs.consumer import FlowControl, PartitionAssignor, Transport
from app.kafka_security import broker_credentials, check_broker_access
from app.logs import apply_level, logging_config
from app.settings import load_or_exit
from app.tuning import WORKER_TUNING

settings = load_or_exit()


class App(faust.App):
    # faust-streaming's faults that lose or strand records, repaired: app/faust_repairs/consumer.py
    offset_gaps = settings.kafka_offset_gaps

    def _new_transport(self) -> Any:
        return Transport(self.conf.broker_consumer, self)

    @cached_property
    def flow_control(self) -> FlowControl:
        return FlowControl(loop=self.loop)

    async def on_first_start(self) -> None:
        # Versions, package files, data directory: one line and exit 78 when one is wrong,
        # before faust creates its directories or anything connects.
        preflight.run_or_exit(settings, Path(self.conf.datadir))
        await super().on_first_start()
        apply_level(settings)      # the worker CLI's `-l` set up logging just before this
        # Before faust's producer and consumer connect: refused credentials or an untrusted
        # certificate end the process with one line instead of a traceback.
        await check_broker_access(settings)
        from app.topics import declare_all   # app.topics imports this module
        await declare_all()


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
    **WORKER_TUNING,                         # app/tuning.py: batches whole, no wait for unacked events
    producer_max_request_size=settings.kafka_max_request_bytes,
    broker_session_timeout=settings.kafka_session_timeout_s,
    # Static membership when set (faust hands it to aiokafka's consumer, which then sends no
    # LeaveGroup on stop): a restarted worker rejoins as itself and gets its partitions back.
    consumer_group_instance_id=settings.kafka_group_instance_id or None,
    PartitionAssignor=PartitionAssignor,     # a static member back at another URL (app/faust_repairs/consumer.py)
    broker_heartbeat_interval=min(3.0, settings.kafka_session_timeout_s / 3),
)
