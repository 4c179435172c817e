"""Click commands: `faust -A app.main send-clicks --help`."""
from __future__ import annotations

import collections
import random
from typing import Iterator, Optional

from faust.cli import AppCommand, option

from app.adapters.registry import RegistryError
from app.commands.producing import send_all
from app.kafka_security import check_broker_access
from app.main import app, settings
from app.topics import clicks_in
from app.commands.samples.clicks import bad_avro, sample_clicks
from domain.errors import TransientError


@app.command(
    option("--count", "-n", type=int, default=1000, show_default=True, help="Clicks to send."),
    option("--users", type=int, default=100, show_default=True, help="Distinct user ids."),
    option("--urls", type=int, default=20, show_default=True, help="Distinct urls."),
    option("--bad-ratio", type=float, default=0.0, show_default=True,
           help="Share of spoiled values (bad magic byte, unknown schema id, truncated body)."),
    option("--seed", type=int, default=0, show_default=True, help="Random seed (same seed, same data)."),
)
async def send_clicks(self: AppCommand, count: int, users: int, urls: int, bad_ratio: float,
                      seed: int) -> None:
    """Send COUNT UserClick events as Confluent-framed Avro, keyed by user id.

    The schema is registered under <topic>-value first (or, with APP_SCHEMA_AUTO_REGISTER=false,
    must be registered already).
    """
    await check_broker_access(settings)   # commands start the producer before the App's own check
    await clicks_in.maybe_declare()
    topic = clicks_in.get_topic_name()
    clicks_avro = app.resources.clicks_avro
    async with app.resources.registry:
        try:
            encoder = await clicks_avro.use_schema(topic, auto_register=settings.schema_auto_register)
        except (RegistryError, TransientError) as exc:
            raise SystemExit(f"send-clicks: {exc}") from None
    rng = random.Random(seed)
    spoiled: collections.Counter[str] = collections.Counter()

    def messages() -> Iterator[tuple[Optional[bytes], bytes]]:
        for datum in sample_clicks(count, users=users, urls=urls, seed=seed):
            value = clicks_avro.dumps(datum)    # the faust Codec interface: encode with the schema id
            if bad_ratio and rng.random() < bad_ratio:
                value, reason = bad_avro(value, rng.randrange(3))
                spoiled[reason.value] += 1
            yield datum["user_id"].encode(), value

    await send_all(topic, messages(), desc=f"sending to {topic} (schema id {encoder.schema_id})", total=count)
    if spoiled:
        print("spoiled on purpose: " + ", ".join(f"{n} {reason}" for reason, n in sorted(spoiled.items())))
