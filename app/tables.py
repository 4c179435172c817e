"""Faust tables, declared once."""
from __future__ import annotations

from app.main import app

# Account id -> {"account": {...} | None, "fetched_at": epoch s}; see domain/enrichment.py.
# Written from batches that mix partitions, so the partition comes from the key's hash
# (use_partitioner), which is also how producers key the input topics by account id: an
# account's entry lives on the same partition number as its events. Keys are raw UTF-8
# (the app's default key serializer), values JSON.
accounts_cache = app.Table(
    "accounts-cache",
    key_type=str,
    use_partitioner=True,
    help="Cache of PostgreSQL account data for enrichment",
)
