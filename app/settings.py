"""All configuration in one place: defaults < YAML file for the environment < APP_* env vars."""
from __future__ import annotations

import dataclasses
import functools
import os
import re
import socket
import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from importlib.resources.abc import Traversable
from typing import Any, Callable, Mapping

import yaml

from app import assets
from domain.parsing import TimeRules

# The source checkout (README, tests); never the place of a file the package needs at run
# time: installed, this is site-packages (app/assets.py reads those files).
ROOT = Path(__file__).resolve().parent.parent
ENV_PREFIX = "APP_"


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names it."""


def _str(raw: str) -> str:
    if not raw.strip():
        raise ValueError("must not be empty")
    return raw.strip()


def _number(kind: type, raw: str) -> Any:
    try:
        return kind(raw.strip())
    except ValueError:
        raise ValueError(f"must be {'an integer' if kind is int else 'a number'}") from None


def _positive_int(raw: str) -> int:
    value = _number(int, raw)
    if value <= 0:
        raise ValueError("must be > 0")
    return value


def _port(raw: str) -> int:
    value = _number(int, raw)
    if not 0 < value < 65536:
        raise ValueError("must be a TCP port (1-65535)")
    return value


def _float(raw: str) -> float:
    value = _number(float, raw)
    if value < 0:
        raise ValueError("must be >= 0")
    return value


def _positive_float(raw: str) -> float:
    value = _number(float, raw)
    if not value > 0:        # also refuses nan
        raise ValueError("must be > 0")
    return value


def _aware_datetime(raw: str) -> datetime:
    try:
        moment = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise ValueError("must be an ISO-8601 timestamp") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _instance_id(raw: str) -> str:
    """Kafka's rules for a group.instance.id (as for a topic name); empty: none."""
    value = raw.strip()
    if value and (len(value) > 249 or value in (".", "..") or not re.fullmatch(r"[A-Za-z0-9._-]+", value)):
        raise ValueError("must be at most 249 of the characters A-Z a-z 0-9 . _ -")
    return value


def _bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _list(raw: str) -> tuple[str, ...]:
    items = tuple(part.strip() for part in raw.split(",") if part.strip())
    if not items:
        raise ValueError("must list at least one value")
    return items


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip()
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return value

    return parse


def _url(*schemes: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip()
        if not any(value.startswith(f"{scheme}://") for scheme in schemes):
            raise ValueError(f"must be a URL starting with {' or '.join(s + '://' for s in schemes)}")
        return value

    return parse


def setting(default: Any, parse: Callable[[str], Any], doc: str, secret: bool = False,
            deployed: bool = False) -> Any:
    """`deployed`: staging and prod must set it explicitly (its default is the local stack)."""
    return field(default=default, repr=not secret, metadata={"parse": parse, "doc": doc, "secret": secret,
                                            "deployed": deployed})


@dataclass(frozen=True)
class Settings:
    """The application's settings; each field is read from APP_<FIELD NAME IN CAPITALS>."""

    env: str = setting("dev", _choice("dev", "staging", "prod", "test"),
                       "Environment name; selects the packaged app/config/<env>.yaml when it exists.")
    id: str = setting("txpipe", _str,
                          "Faust app id: consumer group and prefix of changelog topics.")
    kafka_brokers: str = setting("kafka://127.0.0.1:19092", _url("kafka"),
                                 "Kafka bootstrap servers (kafka://host:port;host2:port).", deployed=True)
    # Kafka connection security (MSK-like clusters: SASL_SSL + SCRAM-SHA-512).
    kafka_security_protocol: str = setting("PLAINTEXT", _choice("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"),
                                           "Kafka security protocol: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.")
    kafka_sasl_mechanism: str = setting("SCRAM-SHA-512", _choice("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"),
                                        "SASL mechanism when the protocol is SASL_*.")
    kafka_sasl_username: str = setting("", str, "SASL user name (required with SASL_*).")
    kafka_sasl_password: str = setting("", str, "SASL password (required with SASL_*).", secret=True)
    kafka_ssl_cafile: str = setting("", str, "PEM file of the CA that signed the brokers' certificates "
                                    "(SSL/SASL_SSL); empty: the system's CAs.")
    kafka_session_timeout_s: float = setting(30.0, _float, "Consumer group session timeout: how soon the "
                                             "partitions of a dead worker move to the others (with a group "
                                             "instance id: of a worker that does not come back). Heartbeats "
                                             "go every 3 s (a third of it if shorter) from the consumer's own "
                                             "thread, so a loaded worker is not taken for dead.")
    kafka_group_instance_id: str = setting("", _instance_id, "Static group membership (Kafka's group.instance.id): "
                                           "a name unique in the group and stable across restarts of one worker "
                                           "(compose: one per service; Kubernetes: the StatefulSet pod's name; "
                                           "two workers on one host: one each). A worker restarted within the "
                                           "session timeout gets its own partitions back at once, and its stop "
                                           "causes no rebalance (nor does a crash: its partitions wait for it "
                                           "or for the session timeout). Empty: dynamic membership, every "
                                           "start and stop rebalances the group.")
    kafka_fenced_health_s: float = setting(300.0, _float, "A worker whose group instance id another worker "
                                           "uses (the broker keeps dropping it from the group) fails /ready at "
                                           "once and /health after this long (app/membership.py).")
    kafka_producer_linger_ms: float = setting(5.0, _float, "How long the producer holds a record for more to "
                                              "join its request; under a backlog requests fill while one is "
                                              "in flight anyway.")
    kafka_commit_interval_s: float = setting(2.8, _positive_float, "How often the worker commits the offsets of "
                                             "what it processed (faust's default): a crashed worker's partitions "
                                             "replay up to this much of its work.")
    kafka_fetch_max_wait_ms: int = setting(100, _positive_int, "Longest the broker holds the worker's fetch "
                                           "request for data to arrive (faust fixes 1500): while it is held, the "
                                           "partitions not in it wait for their next fetch "
                                           "(app/faust_repairs/consumer.py, 6).")
    faust_cython_optimizations: bool = setting(True, _bool, "faust's repaired Cython fast paths (its "
                                               "`cython_optimizations`): a stream takes what is queued without "
                                               "awaiting its channel per event. Off: faust's released behaviour.")
    kafka_offset_gaps: bool = setting(False, _bool, "Input topics may have offsets without a record "
                                      "(transactional producers upstream, compacted topics): the commit "
                                      "point may then pass them. Off: it never passes an unprocessed offset "
                                      "(app/faust_repairs/consumer.py).")
    stall_check_s: float = setting(60.0, _float, "A stream partition whose commit point has not moved for this "
                                   "long although records past it were read is rewound to it (app/stalls.py); "
                                   "0 turns the watchdog off.")
    allow_untested_versions: bool = setting(False, _bool, "Start even when faust-streaming, mode-streaming or "
                                            "aiokafka is not the version the repairs (app/faust_repairs/, "
                                            "app/stalls.py) were written for, with a warning; "
                                            "off: refuse to start, naming them.")
    kafka_max_message_bytes: int = setting(1048588, _positive_int, "Largest record the brokers accept "
                                           "(their message.max.bytes, or the topics' max.message.bytes if "
                                           "lower): a larger output is dead-lettered as too_large, a larger "
                                           "dead letter keeps the original bytes in the dead-letter store.")
    kafka_max_request_bytes: int = setting(1048576, _positive_int, "The producer's max_request_size; the "
                                           "smaller of this and APP_KAFKA_MAX_MESSAGE_BYTES bounds an output.")
    topic_prefix: str = setting("", str, "Prefix added to every topic name (isolates tests and tenants).")
    topic_partitions: int = setting(8, _positive_int, "Partitions of the topics the app creates.")
    topic_replicas: int = setting(1, _positive_int, "Replication factor of the topics the app creates.")
    input_topics: tuple[str, ...] = setting(("transactions.raw",), _list,
                                            "Comma-separated input topics of the transactions pipeline.")
    sink_topic_template: str = setting("transactions.{category}.enriched", _str,
                                       "Sink topic per category; {category} is payment, receipt or refund.")
    dlq_topic: str = setting("pipeline.dlq", _str, "Dead-letter topic.")
    clicks_topic: str = setting("user-clicks-avro", _str, "Input topic of the clicks agent (Confluent-framed Avro).")
    postgres_dsn: str = setting("postgresql://postgres@127.0.0.1:15432/app", _url("postgresql", "postgres"),
                                "PostgreSQL DSN; put the password in APP_POSTGRES_PASSWORD, not here.", deployed=True)
    postgres_password: str = setting("", str, "PostgreSQL password.", secret=True)
    postgres_pool_size: int = setting(4, _positive_int, "Most PostgreSQL connections per worker.")
    postgres_timeout_s: float = setting(10.0, _float, "PostgreSQL connect/query timeout, in seconds.")
    cql_hosts: tuple[str, ...] = setting(("127.0.0.1",), _list, "ScyllaDB/Cassandra contact points.", deployed=True)
    cql_port: int = setting(19042, _port, "CQL native-protocol port.")
    cql_keyspace: str = setting("pipeline", _str, "Keyspace of the processing history.")
    cql_replication_factor: int = setting(1, _positive_int, "Replication factor when the app creates its keyspace.")
    cql_username: str = setting("", str, "CQL user (empty: no authentication).")
    cql_password: str = setting("", str, "CQL password.", secret=True)
    cql_concurrency: int = setting(64, _positive_int, "Most CQL writes in flight per worker.")
    cql_batch_rows: int = setting(8, _positive_int, "History rows per UNLOGGED batch request to the CQL server "
                                  "(8 rows stay under Cassandra's 5 KB batch warning).")
    cql_timeout_s: float = setting(10.0, _float, "CQL request timeout, in seconds.")
    cql_direct_writes: bool = setting(True, _bool, "History batches written once in the protocol's form and sent "
                                      "on the driver's pooled connections without its per-request ResponseFuture "
                                      "(app/adapters/cql.py `EncodedBatch`, `_Direct`); false: the driver's "
                                      "BatchStatement of bound rows through `execute_async`.")
    migrate_on_start: bool = setting(True, _bool, "Workers apply PostgreSQL/CQL migrations at start.")
    schema_registry_url: str = setting("http://127.0.0.1:18081/apis/ccompat/v7", _url("http", "https"),
                                       "Confluent-compatible Schema Registry base URL.", deployed=True)
    schema_registry_username: str = setting("", str, "Registry basic-auth user (Confluent Cloud API key); "
                                            "empty: no authentication.")
    schema_registry_password: str = setting("", str, "Registry basic-auth password (API secret).", secret=True)
    schema_registry_timeout_s: float = setting(5.0, _float, "Registry request timeout, in seconds.")
    schema_auto_register: bool = setting(True, _bool, "Producers register their schema under <topic>-value; "
                                         "false (the default when APP_ENV is staging or prod): use the "
                                         "pre-registered schema and never register.")
    store: str = setting("memory://", _url("memory", "rocksdb"),
                         "Table store: memory:// in dev and tests, rocksdb:// in production.")
    data_dir: str = setting("", str, "Worker data directory (tables on disk), created at start; "
                            "empty: ./var/<id> in the working directory.")
    cache_ttl_s: float = setting(300.0, _float, "Seconds an account stays in the cache before it is fetched again.")
    cache_negative_ttl_s: float = setting(30.0, _float, "Seconds an unknown account is remembered as unknown.")
    cache_changes: bool = setting(False, _bool, "Keep the account cache fresh from PostgreSQL's change feed "
                                  "(Debezium on Kafka Connect, agent account-changes): a change reaches the cache "
                                  "within about a second. Off: the TTL alone bounds staleness.")
    cache_changes_topic_prefix: str = setting("txpipe.cdc", _str, "Debezium's topic.prefix (before "
                                              "APP_TOPIC_PREFIX): its change topics are <prefix>.public.accounts "
                                              "and <prefix>.public.customers.")
    cache_changes_fresh_s: float = setting(60.0, _positive_float, "With APP_CACHE_CHANGES on, /ready fails "
                                           "(check cache_changes) when the change lag of the last change "
                                           "applied exceeded this, or changes stopped while the slot retains "
                                           "more WAL than APP_CACHE_CHANGES_MAX_RETAINED_BYTES.")
    cache_changes_max_retained_bytes: int = setting(1 << 30, _positive_int, "Retained WAL of the connector's "
                                                    "replication slot beyond which /ready fails (a dead "
                                                    "connector makes PostgreSQL keep WAL).")
    connect_url: str = setting("http://127.0.0.1:18083", _url("http", "https"), "Kafka Connect REST API "
                               "(register-connector).")
    cache_changes_slot: str = setting("txpipe_cache", _str, "Replication slot of the Debezium connector "
                                      "(one per database; pg_replication_slots is sampled for its retained WAL).")
    batch_size: int = setting(500, _positive_int, "Events an agent takes per batch.")
    batch_stuck_s: float = setting(120.0, _positive_float, "A batch unfinished for longer than this makes "
                                   "/ready answer 503 naming its partitions (and the outage, if one is "
                                   "being waited out).")
    timestamp_earliest: datetime = setting(datetime(2000, 1, 1, tzinfo=timezone.utc), _aware_datetime,
                                           "Event timestamps before this (ISO-8601) are dead-lettered as "
                                           "implausible_timestamp.")
    timestamp_max_ahead_s: float = setting(86400.0, _float, "Event timestamps more than this many seconds "
                                           "ahead of the worker's clock are dead-lettered as "
                                           "implausible_timestamp.")
    batch_wait_s: float = setting(0.2, _float, "Longest a batch keeps collecting events that keep arriving, in "
                                  "seconds; a batch goes at once when nothing more is queued.")
    sales_topic: str = setting("sales.orders", _str, "Topic of the sales orders.")
    sales_batch_size: int = setting(100, _positive_int, "Most sales orders per PostgreSQL upsert.")
    sales_batch_wait_s: float = setting(0.5, _positive_float, "Longest wait to fill a sales batch before a "
                                        "partial one is saved, in seconds.")
    web_host: str = setting("127.0.0.1", _str, "Bind address of the web endpoint.")
    web_advertised_host: str = setting("", str, "Host name other workers use to reach this one "
                                       "(table routing); empty: the bind address, or the machine's "
                                       "host name when bound to 0.0.0.0.")
    web_port: int = setting(6066, _port, "Port of the web endpoint.")
    web_tables_enabled: bool = setting(False, _bool, "Serve faust's table-data views (/table/...): they show "
                                       "cached account data, so they are off unless asked for.")
    metrics_enabled: bool = setting(True, _bool, "Record the pipeline's metrics and serve them at /metrics "
                                    "(Prometheus text format).")
    replay_token: str = setting("", str, "Bearer token that POST /dead-letters/replay requires; empty: "
                                "replay over HTTP is disabled (403).", secret=True)
    log_level: str = setting("info", _choice("debug", "info", "warning", "error"), "Log level.")
    log_format: str = setting("text", _choice("text", "json"), "Log lines as text, or as JSON objects "
                              "(one per line, with event_id, topic, partition and offset on lines "
                              "about an event).")

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        environ = os.environ if environ is None else environ
        values = dict(_read_yaml(environ))
        for f in dataclasses.fields(cls):
            name = ENV_PREFIX + f.name.upper()
            if name in environ:
                values[f.name] = environ[name]
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise SettingsError(f"unknown setting {unknown[0]!r} in the YAML file")
        parsed: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in values:
                continue
            raw = values[f.name]
            if isinstance(raw, (list, tuple)):
                raw = ",".join(str(item) for item in raw)
            try:
                parsed[f.name] = f.metadata["parse"](str(raw))
            except ValueError as exc:
                shown = "***" if f.metadata["secret"] else repr(str(raw))
                raise SettingsError(f"{ENV_PREFIX}{f.name.upper()}={shown}: {exc}") from None
        if "schema_auto_register" not in values and parsed.get("env") in ("staging", "prod"):
            parsed["schema_auto_register"] = False   # production mode: schemas are registered by CI
        settings = cls(**parsed)
        if settings.kafka_security_protocol.startswith("SASL_") and not (
                settings.kafka_sasl_username and settings.kafka_sasl_password):
            raise SettingsError(f"{ENV_PREFIX}KAFKA_SASL_USERNAME and {ENV_PREFIX}KAFKA_SASL_PASSWORD are required "
                                f"when {ENV_PREFIX}KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol}")
        if settings.kafka_ssl_cafile and not Path(settings.kafka_ssl_cafile).is_file():
            raise SettingsError(f"{ENV_PREFIX}KAFKA_SSL_CAFILE={settings.kafka_ssl_cafile!r}: no such file")
        if settings.env in ("staging", "prod"):
            for f in dataclasses.fields(cls):
                if f.metadata["deployed"] and f.name not in values:
                    raise SettingsError(
                        f"{ENV_PREFIX}{f.name.upper()} is required when {ENV_PREFIX}ENV={settings.env} "
                        "(its default points at the local stack)")
        return settings

    @property
    def advertised_host(self) -> str:
        if self.web_advertised_host:
            return self.web_advertised_host
        return socket.gethostname() if self.web_host in ("0.0.0.0", "::") else self.web_host

    @functools.cached_property
    def time_rules(self) -> TimeRules:
        """Built once: the parsers read it for every event."""
        return TimeRules(self.timestamp_earliest, timedelta(seconds=self.timestamp_max_ahead_s))

    @property
    def max_output_bytes(self) -> int:
        return min(self.kafka_max_message_bytes, self.kafka_max_request_bytes)

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    def change_topic(self, table: str) -> str:
        """Debezium's topic of a captured table (public schema)."""
        return self.topic(f"{self.cache_changes_topic_prefix}.public.{table}")

    def sink_topic(self, category: str) -> str:
        return self.topic(self.sink_topic_template.format(category=category))

    def describe(self) -> dict[str, Any]:
        """Settings with secrets masked, for logs and the web endpoint."""
        return {
            f.name: ("***" if f.metadata["secret"] and getattr(self, f.name) else getattr(self, f.name))
            for f in dataclasses.fields(self)
        }


def _read_yaml(environ: Mapping[str, str]) -> Mapping[str, Any]:
    path_str = environ.get(ENV_PREFIX + "CONFIG_FILE")
    path: Path | Traversable
    if path_str:
        path = Path(path_str)
        if not path.is_file():
            raise SettingsError(f"{ENV_PREFIX}CONFIG_FILE={path_str!r}: no such file")
    else:
        packaged = assets.config_file(environ.get(ENV_PREFIX + "ENV", "dev").strip())
        if packaged is None:
            return {}
        path = packaged
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise SettingsError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise SettingsError(f"{path}: must be a mapping of setting names to values")
    return data


def load_or_exit() -> Settings:
    """Load settings; on a bad one print a single clear line and exit, no traceback."""
    try:
        return Settings.load()
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        raise SystemExit(78) from None  # EX_CONFIG


def markdown_table() -> str:
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for f in dataclasses.fields(Settings):
        default = f.default
        if isinstance(default, tuple):
            default = ",".join(default)
        if isinstance(default, datetime):
            default = default.isoformat()
        shown = f"`{default}`" if default != "" else "(empty)"
        required = " Required in staging/prod." if f.metadata["deployed"] else ""
        rows.append(f"| `{ENV_PREFIX}{f.name.upper()}` | {shown} | {f.metadata['doc']}{required} |")
    return "\n".join(rows)


def update_readme(path: Path = ROOT / "README.md") -> None:
    begin, end = "<!-- settings-table:begin -->\n", "\n<!-- settings-table:end -->"
    text = path.read_text()
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    path.write_text(head + begin + markdown_table() + end + tail)


if __name__ == "__main__":
    if sys.argv[1:] == ["--update-readme"]:
        update_readme()
    else:
        print(markdown_table())
