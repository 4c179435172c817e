"""The one faust.App. Run with: faust -A app.main worker -l info"""
from __future__ import annotations

from pathlib import Path

import faust

from app.kafka_security import broker_credentials, check_broker_access
from app.settings import ROOT, load_or_exit

settings = load_or_exit()


class App(faust.App):
    async def on_first_start(self) -> None:
        await super().on_first_start()
        # Before faust's producer and consumer connect: refused credentials or an untrusted
        # certificate end the process with one line instead of a traceback.
        await check_broker_access(settings)


app = App(
    settings.id,
    broker=settings.kafka_brokers,
    broker_credentials=broker_credentials(settings),
    store=settings.store,
    datadir=settings.data_dir or str(ROOT / "var" / settings.id),
    autodiscover=["agents", "app.commands"],
    origin="app",
    topic_partitions=settings.topic_partitions,
    topic_replication_factor=settings.topic_replicas,
    topic_allow_declare=True,
    web_bind=settings.web_host,
    web_host=settings.advertised_host,
    web_port=settings.web_port,
    web_enabled=True,
    web_tables_enabled=False,   # table contents over HTTP only through views that ask for them
    # Batches are the unit of work; let the consumer hand them over whole.
    broker_max_poll_records=1000,
    stream_buffer_maxsize=16384,
    producer_linger=0.005,
    consumer_auto_offset_reset="earliest",
    broker_session_timeout=settings.kafka_session_timeout_s,
    broker_heartbeat_interval=min(3.0, settings.kafka_session_timeout_s / 3),
)
Path(app.conf.datadir).mkdir(parents=True, exist_ok=True)
