"""Migrations and config are package data, found through importlib.resources; a package that
lost them says so instead of applying nothing."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from app import assets
from app.adapters.cql import Cql
from app.adapters.postgres import Postgres
from app.settings import ROOT, Settings


def test_migrations_come_in_order_from_the_package() -> None:
    postgres = [f.name for f in assets.migrations("postgres")]
    assert postgres == sorted(postgres) and postgres[:2] == ["001_accounts.sql", "002_sales.sql"]
    assert [f.name for f in assets.migrations("cql")][:2] == ["001_history.cql", "002_clicks.cql"]
    # the package's copy is the source tree's (an editable install reads it in place)
    assert {p.name for p in (ROOT / "app" / "migrations" / "postgres").glob("*.sql")} == set(postgres)


def test_every_environment_has_its_packaged_config() -> None:
    for env in ("dev", "test", "staging", "prod"):
        found = assets.config_file(env)
        assert found is not None and "env: " + env in found.read_text()
    assert assets.config_file("nowhere") is None


@pytest.fixture
def empty_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The package as a build without its package data would install it."""
    (tmp_path / "migrations" / "postgres").mkdir(parents=True)      # a directory, but no files
    monkeypatch.setattr(assets, "_root", lambda: tmp_path)
    return tmp_path


def test_a_package_without_migrations_is_an_error_not_nothing_to_apply(empty_package: Path) -> None:
    for kind in ("postgres", "cql"):          # an empty directory, and no directory at all
        with pytest.raises(assets.MissingAssetError, match=f"no {kind} migrations"):
            assets.migrations(kind)
    with pytest.raises(assets.MissingAssetError):
        assets.check()


def test_migrate_refuses_before_it_connects(empty_package: Path) -> None:
    # Nothing listens on port 1: had migrate connected first, this would be an outage to retry.
    s = Settings.load({"APP_POSTGRES_DSN": "postgresql://nobody@127.0.0.1:1/x", "APP_CQL_PORT": "1"})
    with pytest.raises(assets.MissingAssetError, match="no postgres migrations"):
        asyncio.run(Postgres(s).migrate())
    with pytest.raises(assets.MissingAssetError, match="no cql migrations"):
        asyncio.run(Cql(s).migrate())


def test_the_settings_read_the_packaged_yaml(empty_package: Path) -> None:
    # With the packaged prod.yaml gone, its values are gone too: they did come from the package.
    prod = {"APP_ENV": "prod", "APP_KAFKA_BROKERS": "kafka://k:9092", "APP_POSTGRES_DSN": "postgresql://p/app",
            "APP_CQL_HOSTS": "c", "APP_SCHEMA_REGISTRY_URL": "http://r"}
    assert Settings.load(prod).store == "memory://"
    empty_package.joinpath("config").mkdir()
    empty_package.joinpath("config", "prod.yaml").write_text("store: rocksdb://\n")
    assert Settings.load(prod).store == "rocksdb://"
