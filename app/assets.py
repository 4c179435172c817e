"""Files the code needs at run time (migrations, per-environment config), shipped inside the
package and read through importlib.resources, so they are found wherever it is installed: a
path built from `__file__` or the working directory points elsewhere in a site-packages
install, and a missing file there used to look like "nothing to apply"."""
from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Optional

PACKAGE = "app"
MIGRATION_KINDS = {"postgres": ".sql", "cql": ".cql"}


class MissingAssetError(RuntimeError):
    """A file the package must ship is not there: the installation is incomplete."""


def _root() -> Traversable:
    return files(PACKAGE)


def migrations(kind: str) -> list[Traversable]:
    """The migration files of `kind` ("postgres" or "cql"), in the order they apply.

    The app always has migrations: a missing directory or an empty one means a broken
    installation (package data left out of the build), never "up to date"."""
    suffix = MIGRATION_KINDS[kind]
    folder = _root() / "migrations" / kind
    found = sorted((f for f in folder.iterdir() if f.name.endswith(suffix)), key=lambda f: f.name) \
        if folder.is_dir() else []
    if not found:
        raise MissingAssetError(f"no {kind} migrations (*{suffix}) in the installed package at {folder}: "
                                "the installation is incomplete (package data missing)")
    return found


def config_file(env: str) -> Optional[Traversable]:
    """The packaged config/<env>.yaml, or None: an environment without one uses the defaults."""
    path = _root() / "config" / f"{env}.yaml"
    return path if path.is_file() else None


def check() -> None:
    """Fail at start-up, not at the first migration, when the package lost its data."""
    for kind in MIGRATION_KINDS:
        migrations(kind)
