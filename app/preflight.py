"""Checks a worker makes at start, before it connects: the library versions its repairs were
written for, the data directory, the package's own files. Each failure is one line and an exit
code (78, as for a configuration error), not a traceback half-way through a rebalance."""
from __future__ import annotations

import logging
import os
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Callable, Mapping

from app import assets
from app.settings import Settings

log = logging.getLogger(__name__)
EX_CONFIG = 78

# app/faust_repairs/ and app/stalls.py override private methods of these exact
# releases (the consumer's commit bookkeeping, the fetcher's seek, mode's flow control, the
# RocksDB store's writes). Another release can
# rename or change them without notice; the repairs would then break silently or do harm, so
# a new version is a change to test (tests/unit/test_faust_fixes.py, test_stalls.py and
# bench/backlog_start.py --kill 3), then to write here.
REPAIRED_FOR: Mapping[str, str] = {
    "faust-streaming": "0.15.3",
    "mode-streaming": "0.7.1",
    "aiokafka": "0.14.0",
}


class PreflightError(RuntimeError):
    """A start-up check failed; the message is the one line to print."""


def _installed(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def check_versions(settings: Settings, installed: Callable[[str], str] = _installed) -> None:
    """Refuse other versions than those the repairs were written for, unless the operator
    set APP_ALLOW_UNTESTED_VERSIONS (then warn, naming them)."""
    found_versions = {name: installed(name) for name in REPAIRED_FOR}
    wrong = {name: v for name, v in found_versions.items() if v != REPAIRED_FOR[name]}
    if not wrong:
        return
    found = ", ".join(f"{name} {version} (repairs written for {REPAIRED_FOR[name]})"
                      for name, version in wrong.items())
    if settings.allow_untested_versions:
        log.warning("untested library versions: %s; running anyway because APP_ALLOW_UNTESTED_VERSIONS "
                    "is set: the repairs of app/faust_repairs/ and app/stalls.py may not hold", found)
        return
    raise PreflightError(f"untested library versions: {found}; app/faust_repairs/ and app/stalls.py "
                         "override their private methods. Install the versions of "
                         "requirements.lock, or set APP_ALLOW_UNTESTED_VERSIONS=true to run anyway")


def ensure_data_dir(path: Path) -> None:
    """Create the data directory (tables on RocksDB live there) and prove it is writable: a
    directory that exists but belongs to another user fails only when RocksDB opens a table."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        user = _user()
        raise PreflightError(
            f"data directory: cannot use {path} as {user} ({exc.strerror or type(exc).__name__}); "
            "create it writable for that user or mount a volume there, or set APP_DATA_DIR") from None


def _user() -> str:
    try:
        import pwd
        return f"user {pwd.getpwuid(os.getuid()).pw_name}"
    except (ImportError, KeyError):
        return f"uid {os.getuid()}"


def check_assets() -> None:
    try:
        assets.check()
    except assets.MissingAssetError as exc:
        raise PreflightError(str(exc)) from None


def run_or_exit(settings: Settings, data_dir: Path) -> None:
    """All checks, in the order an operator would fix them; the first failure ends the process."""
    try:
        check_versions(settings)
        check_assets()
        ensure_data_dir(data_dir)
    except PreflightError as exc:
        print(exc, file=sys.stderr, flush=True)
        raise SystemExit(EX_CONFIG) from None
