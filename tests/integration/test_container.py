"""The container smoke test, without Docker: the image laid out as the Dockerfile says
(tests/integration/image.py: a clean virtualenv, `pip install` of the package from the COPY
lines only, no source tree on the path, the image's working directory and user), run with the
environment docker-compose.yml gives its workers, pointed at the local stack.

Fails when a file the image needs is missing from the COPY lines, when the package does not
ship its migrations or config, or when the image's user cannot write its data directory (the
compose workers could not start for that reason before: `nobody` under /var/lib).
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import asyncpg
import pytest
import yaml

from app.kafka_tools import read_all
from app.settings import ROOT, Settings
from tests.integration.image import Image, build
from tests.integration.pipeline import cql_rows, forwarded, history_counts, output_count
from devtools.processes import wait_until

SERVERS = ("APP_KAFKA_BROKERS", "APP_POSTGRES_DSN", "APP_CQL_HOSTS", "APP_CQL_PORT", "APP_SCHEMA_REGISTRY_URL")
ISOLATION = ("APP_ID", "APP_TOPIC_PREFIX", "APP_CQL_KEYSPACE", "APP_WEB_PORT")


@pytest.fixture(scope="module")
def image() -> Iterator[Image]:
    """Laid out once for the module (a minute: the virtualenv and pip install)."""
    top = Path(tempfile.mkdtemp(prefix="txpipe-image-"))
    top.chmod(0o755)                       # the image's user must reach its files
    log = (top / "build.log").open("w")
    try:
        yield build(top / "rootfs", log=log)
    except Exception:
        log.flush()
        print((top / "build.log").read_text()[-5000:])
        raise
    finally:
        log.close()
        shutil.rmtree(top, ignore_errors=True)


def compose_env(overrides: dict[str, str]) -> dict[str, str]:
    """The worker environment of docker-compose.yml, `${VAR:-default}` resolved as compose
    does (from the environment, else the default), then `overrides`."""
    env = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["worker-1"]["environment"]

    def resolve(value: Any) -> str:
        return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}", lambda m: os.environ.get(m.group(1), m.group(2) or ""),
                      str(value))

    return {**{k: resolve(v) for k, v in env.items()}, **overrides}


def http_status(port: str, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


async def applied(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        if not await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL"):
            return []
        return [r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations ORDER BY 1")]
    finally:
        await conn.close()


def migrations_applied(dsn: str) -> list[str]:
    return asyncio.run(applied(dsn))


async def _migrated(dsn: str) -> bool:
    return await applied(dsn) == ["001_accounts", "002_sales", "003_cache_changes"]


def cql_tables(settings: Settings) -> set[str]:
    return {r.table_name for r in cql_rows(
        settings, "SELECT table_name FROM system_schema.tables WHERE keyspace_name = '{ks}'")}


def test_the_image_imports_the_installed_package_not_a_source_tree(image: Image) -> None:
    where = image.run(["python", "-c", "import app.main, app.assets as a; print(app.main.__file__); "
                       "print(a.migrations('postgres')[0])"], {"APP_KAFKA_BROKERS": "kafka://127.0.0.1:1"})
    assert where.returncode == 0, where.stderr
    site = str(image.path("/usr/local/lib"))
    assert all(line.startswith(site) for line in where.stdout.split()), where.stdout
    assert not any(image.path(image.workdir).iterdir()), "the working directory holds files"
    assert image.user == "nobody" and image.exposed == [6066]


def test_the_installed_package_migrates_a_fresh_database_from_an_empty_directory(
        image: Image, app_env: dict[str, str], tmp_path: Path) -> None:
    empty = image.path("/tmp/empty-dir")
    empty.mkdir(parents=True, exist_ok=True)
    env = {**app_env, "APP_DATA_DIR": "/tmp/unused"}
    done = image.run(["faust", "-A", "app.main", "migrate"], env, cwd=empty)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PostgreSQL: 001_accounts, 002_sales, 003_cache_changes;" in done.stdout, done.stdout
    assert migrations_applied(app_env["APP_POSTGRES_DSN"]) == ["001_accounts", "002_sales", "003_cache_changes"]
    assert {"history_by_account", "history_by_event", "dead_letters"} <= cql_tables(Settings.load(app_env))
    assert list(empty.iterdir()) == []                   # a command leaves no directory behind


@contextlib.contextmanager
def running(image: Image, env: dict[str, str], log_path: Path) -> Iterator["subprocess.Popen[bytes]"]:
    """The image's CMD as its user, ready (/ready 200); stopped with SIGTERM, as a runtime
    stops a container, and required to exit 0."""
    with log_path.open("ab") as log:
        worker = image.popen(image.cmd, env, stdout=log)
    try:
        deadline = time.monotonic() + 150
        while http_status(env["APP_WEB_PORT"], "/ready") != 200:
            assert worker.poll() is None, f"worker exited {worker.returncode}:\n{log_path.read_text()[-4000:]}"
            assert time.monotonic() < deadline, f"not ready in 150 s:\n{log_path.read_text()[-4000:]}"
            time.sleep(1)
        yield worker
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()
    assert worker.returncode == 0, log_path.read_text()[-4000:]


def test_the_image_runs_a_worker_with_the_compose_environment(image: Image, app_env: dict[str, str],
                                                              tmp_path: Path) -> None:
    env = compose_env({k: app_env[k] for k in SERVERS + ISOLATION})
    assert env["APP_ENV"] == "prod" and env["APP_DATA_DIR"].startswith("/var/lib/")
    settings = Settings.load(env)
    assert settings.store == "rocksdb://"                 # from the packaged prod.yaml
    port = env["APP_WEB_PORT"]
    data_dir = image.path(env["APP_DATA_DIR"])
    log_path = tmp_path / "image-worker.log"
    with running(image, env, log_path) as worker:
        uid = next(line.split()[1] for line in Path(f"/proc/{worker.pid}/status").read_text().splitlines()
                   if line.startswith("Uid:"))
        assert int(uid) == image_uid(image.user)

        # The worker migrated the fresh database and keyspace itself (APP_MIGRATE_ON_START).
        asyncio.run(wait_until(lambda: _migrated(env["APP_POSTGRES_DSN"]), 60, "the worker's PostgreSQL migrations"))
        # then the keyspace (after PostgreSQL's, so it may take a moment more on a loaded machine)
        wanted = {"history_by_account", "history_by_event", "dead_letters"}
        asyncio.run(wait_until(lambda: wanted <= cql_tables(settings), 60, "the worker's CQL migrations"))

        # End to end, with the image's own commands.
        for args in (["seed-accounts", "--count", "100"],
                     ["send-transactions", "-n", "300", "--bad-ratio", "0.1", "--accounts", "100", "--seed", "4"]):
            done = image.run(["faust", "-A", "app.main", *args], env)
            assert done.returncode == 0, done.stdout + done.stderr
        try:
            asyncio.run(_wait_count(settings, 300))
        except TimeoutError as exc:
            raise AssertionError(f"{exc}; worker log:\n{log_path.read_text()[-6000:]}") from None
        sent = asyncio.run(forwarded(settings))
        by_event, _ = history_counts(settings)
        assert 0 < len(sent) < 300 and set(by_event) == set(sent)
        account = asyncio.run(read_all(settings.kafka_brokers, settings.sink_topic("payment")))[0].key.decode()
        assert http_status(port, f"/cache/{account}") == 200
        assert http_status(port, "/health") == 200

    # Tables on RocksDB, in the data directory the image made for its user...
    owned = [p for p in data_dir.rglob("*") if p.is_file()]
    assert any(p.name == "CURRENT" for p in owned), f"no RocksDB store under {data_dir}"
    assert {p.stat().st_uid for p in owned} == {image_uid(image.user)}
    # ...which a restarted worker opens again (a container restart keeps its volume).
    with running(image, env, log_path):
        assert http_status(port, f"/cache/{account}") == 200
        assert {p.stat().st_uid for p in data_dir.rglob("*") if p.is_file()} == {image_uid(image.user)}


async def _wait_count(settings: Settings, expected: int) -> None:
    async def done() -> bool:
        return await output_count(settings) >= expected

    await wait_until(done, 120, f"{expected} events in the sink and dead-letter topics", interval=1)
    assert await output_count(settings) == expected


def image_uid(user: str) -> int:
    import pwd
    return pwd.getpwnam(user).pw_uid
