"""The worker image laid out from the Dockerfile, without Docker (there is no engine here).

Each instruction is carried out on the host, in a directory that stands in for the image's
root file system: FROM python:3.11 is a clean virtualenv at <root>/usr/local (so `pip` and
`faust` resolve there, as in the image), COPY copies from the build context (the checkout),
RUN runs its shell command with the image's absolute paths moved under <root>, ENV, WORKDIR and
USER are remembered for the process that runs CMD. An instruction this file does not know is
an error, never skipped: the Dockerfile and this reading of it change together.

What it shares with a real build: the files the COPY lines name and only those, `pip install`
of the package (no source tree on sys.path afterwards), the working directory, the user, the
environment. What it does not: the base image's Debian (the host's is the same release).
"""
from __future__ import annotations

import json
import os
import pwd
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Mapping, Optional

from devtools.processes import ROOT

DOCKERFILE = ROOT / "Dockerfile"
# The system's Python, not a virtualenv's or pyenv's: the image's user must be able to run it
# (a pyenv under /root is closed to `nobody`). Debian 12 has 3.11, as the image.
BASE_PYTHON = "/usr/bin/python3.11"
# An absolute path in a RUN command: after the start or a blank, an `=` or a quote.
_ABSOLUTE = re.compile(r"(?<![\w./-])(/[A-Za-z0-9._-][^\s;&|'\"]*)")


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order; comments dropped, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", text)
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


@dataclass
class Image:
    """The laid-out image: `run` starts a process as the image would (user, cwd, env, PATH)."""

    root: Path
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    user: str = "root"
    cmd: list[str] = field(default_factory=list)
    exposed: list[int] = field(default_factory=list)

    def path(self, image_path: str) -> Path:
        """Where a path of the image is on the host."""
        return self.root / image_path.lstrip("/")

    @property
    def bin(self) -> Path:
        return self.path("/usr/local/bin")

    def host_env(self, extra: Mapping[str, str] = {}) -> dict[str, str]:
        """The image's ENV plus `extra`; absolute paths moved under the root, PATH the image's."""
        merged = {**self.env, **extra}
        moved = {k: (str(self.path(v)) if v.startswith("/") else v) for k, v in merged.items()}
        return {"PATH": f"{self.bin}:/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": _home(self.user),
                **moved}

    def popen(self, args: list[str], extra_env: Mapping[str, str] = {}, cwd: Optional[Path] = None,
              stdout: Optional[IO[bytes]] = None) -> "subprocess.Popen[bytes]":
        """Start `args` as the image's USER (setpriv drops root, as the runtime would)."""
        program = shutil.which(args[0], path=str(self.bin)) or args[0]
        return subprocess.Popen(_as_user(self.user) + [program, *args[1:]], env=self.host_env(extra_env),
                                cwd=cwd or self.path(self.workdir), stdout=stdout, stderr=subprocess.STDOUT,
                                start_new_session=True)

    def run(self, args: list[str], extra_env: Mapping[str, str] = {}, cwd: Optional[Path] = None,
            timeout: float = 180) -> subprocess.CompletedProcess[str]:
        program = shutil.which(args[0], path=str(self.bin)) or args[0]
        return subprocess.run(_as_user(self.user) + [program, *args[1:]], env=self.host_env(extra_env),
                              cwd=cwd or self.path(self.workdir), capture_output=True, text=True, timeout=timeout)


def _home(user: str) -> str:
    try:
        return pwd.getpwnam(user).pw_dir
    except KeyError:
        return "/nonexistent"


def _as_user(user: str) -> list[str]:
    if user in ("root", "0"):
        return []
    if os.geteuid() != 0:
        raise RuntimeError(f"the image runs as {user!r}: laying it out needs root, to drop to that user")
    entry = pwd.getpwnam(user)
    return ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--clear-groups", "--"]


def build(root: Path, dockerfile: Path = DOCKERFILE, context: Path = ROOT, log: Optional[IO[str]] = None,
          pip_cache: bool = True) -> Image:
    """Lay the image out under `root` (which must not exist yet).

    `pip_cache`: let pip reuse its wheel cache although the image sets PIP_NO_CACHE_DIR (the
    same packages either way; a cold download on every run would make CI slow)."""
    root.mkdir(mode=0o755)
    image = Image(root=root)
    for word, args in instructions(dockerfile.read_text()):
        if log:
            print(f"[image] {word} {args}", file=log, flush=True)
        if word == "FROM":
            if not re.match(r"python:3\.11\b", args):
                raise ValueError(f"FROM {args}: only python:3.11 images can be laid out here")
            subprocess.run([BASE_PYTHON, "-m", "venv", str(image.path("/usr/local"))], check=True)
            subprocess.run([str(image.bin / "pip"), "install", "-q", "--upgrade", "pip==24.3.1"], check=True)
        elif word == "ENV":
            for item in shlex.split(args):
                name, equals, value = item.partition("=")
                if not equals:
                    raise ValueError(f"ENV {args}: only the KEY=value form is supported here")
                image.env[name] = value
        elif word == "WORKDIR":
            image.workdir = args if args.startswith("/") else f"{image.workdir.rstrip('/')}/{args}"
            image.path(image.workdir).mkdir(parents=True, exist_ok=True)
        elif word == "COPY":
            if args.startswith("--"):
                raise ValueError(f"COPY {args}: options are not supported here")
            *sources, dest = shlex.split(args)
            _copy(image, context, sources, dest)
        elif word == "RUN":
            env = image.host_env()
            if pip_cache:
                env.pop("PIP_NO_CACHE_DIR", None)
            command = _ABSOLUTE.sub(lambda m: str(image.path(m.group(1))), args)
            done = subprocess.run(["sh", "-ec", command], cwd=image.path(image.workdir), env=env,
                                  stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT)
            if done.returncode != 0:
                raise RuntimeError(f"RUN {args} failed with exit code {done.returncode}")
        elif word == "USER":
            image.user = args
        elif word == "EXPOSE":
            image.exposed += [int(port.split("/")[0]) for port in args.split()]
        elif word == "CMD":
            image.cmd = json.loads(args)
        else:
            raise ValueError(f"Dockerfile instruction {word} is not supported by {__name__}")
    return image


def _copy(image: Image, context: Path, sources: list[str], dest: str) -> None:
    target = image.path(dest if dest.startswith("/") else f"{image.workdir.rstrip('/')}/{dest}")
    for source in sources:
        origin = context / source
        if not origin.exists():
            raise FileNotFoundError(f"COPY {source}: not in the build context")
        if origin.is_dir():
            # Like Docker: COPY dir dest copies the directory's contents into dest.
            shutil.copytree(origin, target, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            into = target / origin.name if dest.endswith("/") or target.is_dir() else target
            into.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, into)

