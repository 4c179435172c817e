"""Sales commands: send sample or random orders, write the committed sample file."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import orjson
from faust.cli import AppCommand, option

from app.commands.producing import send_all
from app.main import app
from app.topics import sales_orders
from app.commands.samples.sales import order_samples, sample_file

# In the source checkout (the commands run from there); an installed package has no sample file
# and needs none: the sample is sample_file(), deterministic.
SAMPLE_PATH = Path("data") / "sales_sample.json"


def _file_orders(path: Path) -> list[tuple[bytes, bytes]]:
    orders = orjson.loads(path.read_bytes())
    if not isinstance(orders, list):
        raise SystemExit(f"{path}: expected a JSON array of orders")
    # Keyed by order number: every version of an order lands in one partition, in order.
    return [(str(o.get("order_number", "") if isinstance(o, dict) else "").encode(), orjson.dumps(o))
            for o in orders]


@app.command(
    option("--count", "-n", type=int, default=1000, show_default=True, help="Random orders to send."),
    option("--bad-ratio", type=float, default=0.0, show_default=True, help="Share of malformed orders."),
    option("--resend-ratio", type=float, default=0.0, show_default=True,
           help="Share of orders repeating an earlier order number (retries and corrections)."),
    option("--seed", type=int, default=0, show_default=True, help="Random seed (same seed, same orders)."),
    option("--first-number", type=int, default=1, show_default=True, help="First order number."),
    option("--file", "file_", type=str, default=None,
           help=f"Send the orders of this JSON array instead (e.g. {SAMPLE_PATH})."),
)
async def send_orders(self: AppCommand, count: int, bad_ratio: float, resend_ratio: float, seed: int,
                      first_number: int, file_: Optional[str]) -> None:
    """Send COUNT random sales orders (or the orders of --file) to the sales topic."""
    if file_:
        messages = _file_orders(Path(file_))
    else:
        samples = order_samples(count, bad_ratio=bad_ratio, resend_ratio=resend_ratio, seed=seed,
                                first_number=first_number)
        messages = [(s.key, s.value) for s in samples]
    await sales_orders.maybe_declare()
    topic = sales_orders.get_topic_name()
    await send_all(topic, messages, desc=f"sending to {topic}", unit="order")


@app.command(
    option("--output", "-o", type=str, default=str(SAMPLE_PATH), show_default=True, help="File to write."),
)
async def write_sales_sample(self: AppCommand, output: str) -> None:
    """Write the 100-order sample file (deterministic: the committed file is this output)."""
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    Path(output).write_bytes(sample_file())
    print(f"wrote {output}")
