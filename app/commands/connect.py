"""register-connector: the account cache's Debezium connector on Kafka Connect (APP_CONNECT_URL)."""
from __future__ import annotations

from faust.cli import AppCommand, option

from app.adapters.connect import DEFAULT_NAME, Connect, connector_config
from app.main import app, settings


@app.command(
    option("--name", default=DEFAULT_NAME, show_default=True, help="Connector name."),
    option("--timeout", type=float, default=60.0, show_default=True, help="Seconds to wait for RUNNING."),
)
async def register_connector(self: AppCommand, name: str, timeout: float) -> None:
    """Create or update the connector (PUT /connectors/NAME/config) and wait until it runs.
    The PostgreSQL migrations (the publication) must have run first: `faust -A app.main migrate`."""
    async with Connect(settings.connect_url) as connect:
        status = await connect.register(name, connector_config(settings), timeout)
    self.say(f"connector {name}: {status['connector']['state']} on {settings.connect_url}")
