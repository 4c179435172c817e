"""docker-compose.yml cannot run here; check what can be checked: shape and settings."""
from __future__ import annotations

import dataclasses

import yaml

from app.settings import ENV_PREFIX, ROOT, Settings


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_has_the_stack_topology() -> None:
    services = compose()["services"]
    assert {"kafka", "schema-registry", "postgres", "scylla", "worker"} <= set(services)
    assert services["worker"]["deploy"]["replicas"] == 2
    assert "broker,controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]


def test_every_setting_compose_passes_exists_and_parses() -> None:
    env = compose()["services"]["worker"]["environment"]
    known = {ENV_PREFIX + f.name.upper() for f in dataclasses.fields(Settings)}
    passed = {k for k in env if k.startswith(ENV_PREFIX)}
    assert passed and passed <= known, f"unknown settings in compose: {sorted(passed - known)}"
    resolved = {k: str(v).replace("${POSTGRES_PASSWORD:-change-me}", "x") for k, v in env.items()}
    s = Settings.load(resolved)      # prod: would raise if a required server were missing
    assert s.env == "prod" and s.cql_hosts == ("scylla",)


def test_compose_services_the_workers_name_exist() -> None:
    c = compose()
    env = c["services"]["worker"]["environment"]
    for key in ("APP_KAFKA_BROKERS", "APP_POSTGRES_DSN", "APP_SCHEMA_REGISTRY_URL"):
        host = env[key].split("://", 1)[1].split("@")[-1].split(":")[0].split("/")[0]
        assert host in c["services"], f"{key} points at {host}, not a compose service"
    assert env["APP_CQL_HOSTS"] in c["services"]
