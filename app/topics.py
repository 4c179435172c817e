"""Every topic the application reads or writes, declared once and named from settings."""
from __future__ import annotations

from faust import TopicT

from app.main import app, settings
from models.transaction import CATEGORIES


def _raw_topic(*names: str) -> TopicT:
    # Values stay bytes: decoding is the pipeline's first stage, so that bad bytes can be
    # dead-lettered exactly as they arrived instead of crashing the deserializer.
    # internal=True: the app declares the topic (with its partition count) when missing.
    return app.topic(*names, key_type=bytes, value_type=bytes, value_serializer="raw",
                     key_serializer="raw", partitions=settings.topic_partitions, internal=True)


transactions_in = _raw_topic(*(settings.topic(name) for name in settings.input_topics))
sinks = {category: _raw_topic(settings.sink_topic(category)) for category in CATEGORIES}
dead_letters = _raw_topic(settings.topic(settings.dlq_topic))
clicks_in = _raw_topic(settings.topic(settings.clicks_topic))   # Confluent-framed Avro
sales_orders = _raw_topic(settings.topic(settings.sales_topic))

OUTPUTS = (*sinks.values(), dead_letters)
ALL = (transactions_in, *OUTPUTS, clicks_in, sales_orders)


async def declare_all() -> None:
    """Create every topic of the app, when missing, before the consumer subscribes: a topic
    created after the subscription may go unseen until the next metadata refresh."""
    for topic in ALL:
        await topic.maybe_declare()
