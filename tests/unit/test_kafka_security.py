"""Kafka security settings to faust credentials and aiokafka arguments; secrets stay hidden."""
from __future__ import annotations

import ssl
from pathlib import Path

import faust
import pytest

from app.kafka_security import aiokafka_auth, broker_credentials
from app.settings import Settings, SettingsError

SCRAM = {"APP_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "APP_KAFKA_SASL_USERNAME": "app",
         "APP_KAFKA_SASL_PASSWORD": "s3cret-pw"}


def test_plaintext_is_the_default_and_has_no_credentials() -> None:
    s = Settings.load({})
    assert broker_credentials(s) is None
    assert aiokafka_auth(s) == {"security_protocol": "PLAINTEXT"}


def test_sasl_ssl_scram_512_like_msk() -> None:
    s = Settings.load(SCRAM)
    creds = broker_credentials(s)
    assert isinstance(creds, faust.SASLCredentials)
    assert creds.protocol.value == "SASL_SSL" and creds.mechanism.value == "SCRAM-SHA-512"
    assert creds.username == "app" and creds.password == "s3cret-pw"
    assert isinstance(creds.ssl_context, ssl.SSLContext)
    assert creds.ssl_context.verify_mode == ssl.CERT_REQUIRED and creds.ssl_context.check_hostname
    kwargs = aiokafka_auth(s)
    assert kwargs["security_protocol"] == "SASL_SSL" and kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_username"] == "app" and kwargs["ssl_context"] is not None


def test_sasl_plaintext_has_no_tls() -> None:
    s = Settings.load({**SCRAM, "APP_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"})
    creds = broker_credentials(s)
    assert isinstance(creds, faust.SASLCredentials)
    assert creds.protocol.value == "SASL_PLAINTEXT" and creds.ssl_context is None
    assert "ssl_context" not in aiokafka_auth(s)


def test_ssl_only() -> None:
    creds = broker_credentials(Settings.load({"APP_KAFKA_SECURITY_PROTOCOL": "SSL"}))
    assert isinstance(creds, faust.SSLCredentials)


@pytest.mark.parametrize("env, message", [
    ({"APP_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"},
     "APP_KAFKA_SASL_USERNAME and APP_KAFKA_SASL_PASSWORD are required"),
    ({**SCRAM, "APP_KAFKA_SASL_PASSWORD": ""}, "are required when APP_KAFKA_SECURITY_PROTOCOL=SASL_SSL"),
    ({"APP_KAFKA_SECURITY_PROTOCOL": "SASL"}, "APP_KAFKA_SECURITY_PROTOCOL='SASL': must be one of"),
    ({"APP_KAFKA_SASL_MECHANISM": "GSSAPI"}, "APP_KAFKA_SASL_MECHANISM='GSSAPI': must be one of"),
    ({"APP_KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"},
     "APP_KAFKA_SSL_CAFILE='/nonexistent/ca.pem': no such file"),
])
def test_bad_security_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.load(env)
    assert message in str(info.value)


def test_passwords_never_show_in_repr_or_describe() -> None:
    s = Settings.load({**SCRAM, "APP_SCHEMA_REGISTRY_PASSWORD": "reg-secret"})
    assert "s3cret-pw" not in repr(s) and "reg-secret" not in repr(s)
    assert s.describe()["kafka_sasl_password"] == "***"


def test_production_mode_never_auto_registers_unless_told(tmp_path: Path) -> None:
    required = {"APP_KAFKA_BROKERS": "kafka://k:9096", "APP_POSTGRES_DSN": "postgresql://db/app",
                "APP_CQL_HOSTS": "s1", "APP_SCHEMA_REGISTRY_URL": "https://sr"}
    empty = tmp_path / "empty.yaml"
    empty.write_text("{}\n")
    assert Settings.load({}).schema_auto_register is True
    prod = {"APP_ENV": "prod", "APP_CONFIG_FILE": str(empty), **required}
    assert Settings.load(prod).schema_auto_register is False
    assert Settings.load({**prod, "APP_SCHEMA_AUTO_REGISTER": "true"}).schema_auto_register is True
