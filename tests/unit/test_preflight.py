"""Start-up checks (app/preflight.py): library versions, package files, data directory."""
from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from app import preflight
from app.settings import ROOT, Settings


def installed(**versions: str):  # type: ignore[no-untyped-def]
    return lambda name: versions.get(name, preflight.REPAIRED_FOR[name])


def test_the_pinned_versions_are_the_ones_the_repairs_were_written_for() -> None:
    preflight.check_versions(Settings.load({}))          # this virtualenv: requirements.lock
    lock = dict(line.split("==") for line in (ROOT / "requirements.lock").read_text().split())
    assert {name: lock[name] for name in preflight.REPAIRED_FOR} == dict(preflight.REPAIRED_FOR)


def test_another_version_refuses_to_start_naming_it() -> None:
    with pytest.raises(preflight.PreflightError) as info:
        preflight.check_versions(Settings.load({}), installed(aiokafka="0.15.0", **{"mode-streaming": "0.8.0"}))
    line = str(info.value)
    assert "\n" not in line
    assert "aiokafka 0.15.0 (repairs written for 0.14.0)" in line
    assert "mode-streaming 0.8.0 (repairs written for 0.7.1)" in line
    assert "faust-streaming" not in line and "APP_ALLOW_UNTESTED_VERSIONS=true" in line


def test_a_missing_library_is_named_too() -> None:
    with pytest.raises(preflight.PreflightError, match="faust-streaming not installed"):
        preflight.check_versions(Settings.load({}), installed(**{"faust-streaming": "not installed"}))


def test_the_override_starts_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    s = Settings.load({"APP_ALLOW_UNTESTED_VERSIONS": "true"})
    with caplog.at_level(logging.WARNING, logger="app.preflight"):
        preflight.check_versions(s, installed(**{"faust-streaming": "0.16.0"}))
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert "faust-streaming 0.16.0 (repairs written for 0.15.3)" in record.getMessage()
    with caplog.at_level(logging.WARNING, logger="app.preflight"):
        preflight.check_versions(s)                       # the right versions: not a word
    assert len(caplog.records) == 1


def test_the_data_directory_is_created_with_its_parents(tmp_path: Path) -> None:
    preflight.ensure_data_dir(tmp_path / "a" / "b")
    assert (tmp_path / "a" / "b").is_dir() and not list((tmp_path / "a" / "b").iterdir())


def test_a_data_directory_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")        # not a directory: fails even for root
    with pytest.raises(preflight.PreflightError) as info:
        preflight.ensure_data_dir(tmp_path / "file" / "data")
    assert str(info.value).startswith(f"data directory: cannot use {tmp_path / 'file' / 'data'} as ")
    assert "APP_DATA_DIR" in str(info.value) and "\n" not in str(info.value)


def test_importing_the_app_creates_nothing(tmp_path: Path) -> None:
    code = "import app.main, app.resources, app.web.views, app.topics"
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT),
                               "APP_DATA_DIR": str(tmp_path / "data")}, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_worker_whose_data_directory_cannot_be_made_exits_78_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    faust = str(Path(sys.executable).with_name("faust"))
    # No broker is needed: the check comes before anything connects.
    proc = subprocess.run([faust, "-A", "app.main", "worker"], cwd=ROOT, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "APP_DATA_DIR": str(tmp_path / "file" / "data"),
                               "APP_KAFKA_BROKERS": "kafka://127.0.0.1:1"}, timeout=60)
    assert proc.returncode == 78, proc.stdout + proc.stderr
    # (the worker sends stderr through its logging: the line comes with a log prefix)
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if "data directory:" in line]
    assert len(lines) == 1 and str(tmp_path / "file" / "data") in lines[0]
    assert "Traceback" not in proc.stdout + proc.stderr
