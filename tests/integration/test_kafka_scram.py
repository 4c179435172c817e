"""Kafka SASL/SCRAM-SHA-512 against the stack's SCRAM listeners (plaintext and TLS): a worker and
the producer command authenticate and process clicks; wrong credentials, an untrusted
certificate or a wrong port end in one line, not a traceback."""
from __future__ import annotations

import os
import subprocess
import time
from typing import Any

from app.settings import Settings
from tests.integration.clicks import dead_letters, url_counts
from devtools.processes import FAUST, ROOT, wait_until

REFUSED = "refused the SCRAM-SHA-512 credentials of user"


def test_scram_worker_and_send_clicks_authenticate(workers: Any, app_env: dict[str, str],
                                                    scram: dict[str, str], event_loop_run: Any) -> None:
    round_trip(workers, app_env, scram, event_loop_run)


def test_scram_over_tls_worker_and_send_clicks_authenticate(workers: Any, app_env: dict[str, str],
                                                            scram_tls: dict[str, str],
                                                            event_loop_run: Any) -> None:
    round_trip(workers, app_env, scram_tls, event_loop_run)


def round_trip(workers: Any, app_env: dict[str, str], security: dict[str, str], event_loop_run: Any) -> None:
    """A worker and send-clicks both connected through `security`: every click arrives."""
    env = {**app_env, **security}
    settings = Settings.load(env)
    worker = workers(**security).start()
    done = subprocess.run([FAUST, "-A", "app.main", "send-clicks", "-n", "300", "--bad-ratio", "0.05"],
                          env={**os.environ, **env}, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    n_bad = sum(int(part.split()[0]) for part in
                done.stdout.split("spoiled on purpose: ", 1)[1].splitlines()[0].split(", "))

    async def scenario() -> None:
        async def all_counted() -> bool:
            return sum(url_counts(settings).values()) >= 300 - n_bad
        await wait_until(all_counted, 90, "every good click counted")
        assert sum(url_counts(settings).values()) == 300 - n_bad

        async def all_lettered() -> bool:
            return len(await dead_letters(Settings.load(app_env))) >= n_bad   # read over PLAINTEXT
        await wait_until(all_lettered, 30, f"{n_bad} dead letters")

    event_loop_run(scenario())
    assert "SaslAuthenticationFailed" not in worker.log_path.read_text()


def test_scram_wrong_password_ends_in_one_clear_line(app_env: dict[str, str], scram: dict[str, str],
                                                      tmp_path: Any) -> None:
    env = {**os.environ, **app_env, **scram, "APP_KAFKA_SASL_PASSWORD": "not-the-password"}
    started = time.monotonic()
    worker = subprocess.run([FAUST, "-L", "uvloop", "-A", "app.main", "worker", "-l", "info"], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    output = worker.stdout + worker.stderr
    assert worker.returncode == 77, output
    assert time.monotonic() - started < 60, "fails fast, no hang"
    assert [line for line in output.splitlines() if REFUSED in line], output
    assert "Traceback" not in output and "Unable to bootstrap" not in output
    assert "not-the-password" not in output

    command = subprocess.run([FAUST, "-A", "app.main", "send-clicks", "-n", "5"], env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
    lines = (command.stdout + command.stderr).strip().splitlines()
    assert command.returncode == 77
    assert len(lines) == 1 and REFUSED in lines[0], lines


def test_scram_wrong_protocol_or_port_is_named(app_env: dict[str, str], scram: dict[str, str]) -> None:
    """PLAINTEXT against the SCRAM port, or SASL against the PLAINTEXT port: one line each."""
    plain_to_sasl = {**os.environ, **app_env, "APP_KAFKA_BROKERS": scram["APP_KAFKA_BROKERS"]}
    sasl_to_plain = {**os.environ, **app_env, **scram, "APP_KAFKA_BROKERS": app_env["APP_KAFKA_BROKERS"]}
    for env, expected, rc in ((plain_to_sasl, "no bootstrap server answered with PLAINTEXT", 1),
                              (sasl_to_plain, "does not offer SASL SCRAM-SHA-512", 77)):
        command = subprocess.run([FAUST, "-A", "app.main", "send-clicks", "-n", "5"], env=env, cwd=ROOT,
                                 capture_output=True, text=True, timeout=120)
        lines = (command.stdout + command.stderr).strip().splitlines()
        assert command.returncode == rc and len(lines) == 1 and expected in lines[0], lines


def test_tls_certificate_not_trusted_ends_in_one_clear_line(app_env: dict[str, str],
                                                            scram_tls: dict[str, str]) -> None:
    """SASL_SSL without the CA that signed the broker's certificate (only the system's CAs)."""
    env = {**os.environ, **app_env, **scram_tls, "APP_KAFKA_SSL_CAFILE": ""}
    worker = subprocess.run([FAUST, "-L", "uvloop", "-A", "app.main", "worker", "-l", "info"], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    output = worker.stdout + worker.stderr
    assert worker.returncode == 77, output
    assert [line for line in output.splitlines() if "TLS certificate of" in line and "not trusted" in line]
    assert "Traceback" not in output
