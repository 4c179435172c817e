"""Settings: defaults, YAML per environment, env overrides, one clear line per bad value."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app.settings import ROOT, Settings, SettingsError, markdown_table


def test_defaults_point_at_the_local_stack() -> None:
    s = Settings.load({})
    assert s.kafka_brokers == "kafka://127.0.0.1:19092"
    assert s.input_topics == ("transactions.raw",)
    assert s.sink_topic("refund") == "transactions.refund.enriched"


def test_env_overrides_and_parses_types() -> None:
    s = Settings.load({"APP_WEB_PORT": "7000", "APP_INPUT_TOPICS": "pix.payments, pix.receipts",
                       "APP_TOPIC_PREFIX": "x.", "APP_BATCH_WAIT_S": "0.5"})
    assert s.web_port == 7000
    assert s.input_topics == ("pix.payments", "pix.receipts")
    assert s.topic("pipeline.dlq") == "x.pipeline.dlq"
    assert s.batch_wait_s == 0.5


def test_yaml_file_for_the_environment_then_env_wins(tmp_path: Path) -> None:
    f = tmp_path / "staging.yaml"
    f.write_text("kafka_brokers: kafka://k1:9092;k2:9092\npostgres_dsn: postgresql://db/app\n"
                 "cql_hosts: [s1, s2]\nschema_registry_url: https://sr\nbatch_size: 250\n")
    s = Settings.load({"APP_ENV": "staging", "APP_CONFIG_FILE": str(f), "APP_BATCH_SIZE": "100"})
    assert s.cql_hosts == ("s1", "s2")
    assert s.kafka_brokers == "kafka://k1:9092;k2:9092"
    assert s.batch_size == 100


@pytest.mark.parametrize("env, message", [
    ({"APP_WEB_PORT": "abc"}, "APP_WEB_PORT='abc': must be an integer"),
    ({"APP_WEB_PORT": "70000"}, "APP_WEB_PORT='70000': must be a TCP port"),
    ({"APP_ENV": "qa"}, "APP_ENV='qa': must be one of"),
    ({"APP_KAFKA_BROKERS": "localhost:9092"}, "APP_KAFKA_BROKERS='localhost:9092': must be a URL"),
    ({"APP_BATCH_SIZE": "0"}, "APP_BATCH_SIZE='0': must be > 0"),
    ({"APP_INPUT_TOPICS": " , "}, "APP_INPUT_TOPICS=' , ': must list at least one value"),
    ({"APP_ENV": "prod"}, "APP_KAFKA_BROKERS is required when APP_ENV=prod"),
    ({"APP_CONFIG_FILE": "/nonexistent.yaml"}, "APP_CONFIG_FILE='/nonexistent.yaml': no such file"),
    ({"APP_KAFKA_GROUP_INSTANCE_ID": "worker 1"}, "APP_KAFKA_GROUP_INSTANCE_ID='worker 1': must be at most 249"),
    ({"APP_KAFKA_GROUP_INSTANCE_ID": "w" * 250}, "APP_KAFKA_GROUP_INSTANCE_ID='" + "w" * 250),
])
def test_bad_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.load(env)
    assert message in str(info.value)


def test_static_membership_is_off_unless_a_group_instance_id_is_given() -> None:
    assert Settings.load({}).kafka_group_instance_id == ""
    assert Settings.load({"APP_KAFKA_GROUP_INSTANCE_ID": " txpipe-worker-0 "}).kafka_group_instance_id == \
        "txpipe-worker-0"


def test_secret_values_are_never_echoed() -> None:
    s = Settings.load({"APP_POSTGRES_PASSWORD": "hunter2"})
    assert s.describe()["postgres_password"] == "***"
    assert "hunter2" not in repr(s.describe())


def test_malformed_yaml_and_unknown_keys(tmp_path: Path) -> None:
    bad = tmp_path / "a.yaml"
    bad.write_text("kafka_brokers: [unclosed\n")
    with pytest.raises(SettingsError, match="not valid YAML"):
        Settings.load({"APP_CONFIG_FILE": str(bad)})
    bad.write_text("kafka_broker: kafka://x:1\n")
    with pytest.raises(SettingsError, match="unknown setting 'kafka_broker'"):
        Settings.load({"APP_CONFIG_FILE": str(bad)})


def test_worker_start_with_a_bad_setting_prints_one_line_and_no_traceback() -> None:
    faust = str(Path(sys.executable).with_name("faust"))
    proc = subprocess.run([faust, "-A", "app.main", "worker"], cwd=ROOT, capture_output=True,
                          text=True, env={"PATH": "/usr/bin:/bin", "APP_WEB_PORT": "abc"}, timeout=60)
    assert proc.returncode == 78
    assert proc.stderr.strip() == "configuration error: APP_WEB_PORT='abc': must be an integer"
    assert "Traceback" not in proc.stdout + proc.stderr


def test_shipped_yaml_files_load() -> None:
    for path in sorted((ROOT / "app" / "config").glob("*.yaml")):
        env = path.stem
        if env in ("staging", "prod"):
            # deployed environments must name their servers: the file alone is not enough
            with pytest.raises(SettingsError, match="is required"):
                Settings.load({"APP_ENV": env})
        else:
            assert Settings.load({"APP_ENV": env}).env == env


def test_readme_configuration_table_is_current() -> None:
    readme = (ROOT / "README.md").read_text()
    assert markdown_table() in readme, "README's settings table is stale: python -m app.settings"


def test_the_worker_producer_linger_comes_from_the_settings() -> None:
    code = "from app.main import app; print(app.conf.producer_linger)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "APP_KAFKA_PRODUCER_LINGER_MS": "7"}, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert float(proc.stdout.strip()) == pytest.approx(0.007)
