"""Every topic the application reads or writes, declared once and named from settings."""
from __future__ import annotations

from typing import Optional

from faust.types import TopicT

from app.main import app, settings
from models.transaction import CATEGORIES


transactions_in = app.raw_topic(*(settings.topic(name) for name in settings.input_topics))
sinks = {category: app.raw_topic(settings.sink_topic(category)) for category in CATEGORIES}
dead_letters = app.raw_topic(settings.topic(settings.dlq_topic))
clicks_in = app.raw_topic(settings.topic(settings.clicks_topic))   # Confluent-framed Avro
sales_orders = app.raw_topic(settings.topic(settings.sales_topic))

# The account cache's change feed, only with APP_CACHE_CHANGES on: Debezium's topics, keyed by
# account id (customers: by customer id) with the app's partition count, and the customers'
# changes fanned out to their accounts, keyed by account id (agents/account_changes.py).
change_topics: Optional[tuple[TopicT, TopicT]] = None
if settings.cache_changes:
    change_topics = (
        app.raw_topic(settings.change_topic("accounts"), settings.change_topic("customers") + ".by-account"),
        app.raw_topic(settings.change_topic("customers")),
    )
