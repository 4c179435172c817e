"""Every topic the application reads or writes, declared once and named from settings."""
from __future__ import annotations

from app.main import app, settings
from models.transaction import CATEGORIES


transactions_in = app.raw_topic(*(settings.topic(name) for name in settings.input_topics))
sinks = {category: app.raw_topic(settings.sink_topic(category)) for category in CATEGORIES}
dead_letters = app.raw_topic(settings.topic(settings.dlq_topic))
clicks_in = app.raw_topic(settings.topic(settings.clicks_topic))   # Confluent-framed Avro
sales_orders = app.raw_topic(settings.topic(settings.sales_topic))
