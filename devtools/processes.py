"""Worker subprocesses, free ports and the local stack's settings."""
from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator, Mapping, Optional

ROOT = Path(__file__).resolve().parents[1]
FAUST = str(Path(sys.executable).with_name("faust"))
READY = b"[^Worker]: Ready"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stack_env() -> dict[str, str]:
    """The running local stack's settings as APP_* variables (`scripts/stack env`)."""
    out = subprocess.run([str(ROOT / "scripts" / "stack"), "env"], capture_output=True, text=True,
                         check=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


@contextlib.contextmanager
def stack_lock(exclusive: bool = False) -> Iterator[None]:
    """The stack's test lock (.stack/run/tests.lock): tests and benchmarks hold it shared, a
    disruptive test (one that stops servers) exclusively, so that no run on this machine
    has a server stopped under its feet."""
    path = ROOT / ".stack" / "run" / "tests.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class Worker:
    """A worker subprocess in a session of its own, with its settings and log file:
    `faust -L loop -A module worker` unless `argv` says otherwise; ready once `ready` is in
    the part of its log it wrote."""

    def __init__(self, env: Mapping[str, str], log_path: Path, loop: str = "uvloop", module: str = "app.main",
                 argv: Optional[list[str]] = None, ready: bytes = READY) -> None:
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.argv = argv or [FAUST, "-L", loop, "-A", module, "worker", "-l", "info"]
        self.ready = ready
        self.offset = 0
        self.proc: Optional[subprocess.Popen[bytes]] = None

    def launch(self) -> "Worker":
        with self.log_path.open("ab") as out:
            self.offset = out.tell()
            self.proc = subprocess.Popen(self.argv, env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        return self

    def is_ready(self) -> bool:
        """Ready, or raises when the process has exited before it was."""
        assert self.proc is not None
        if self.ready in self.log_path.read_bytes()[self.offset:]:
            return True
        if self.proc.poll() is not None:
            raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.tail()}")
        return False

    def start(self, timeout: float = 90.0) -> "Worker":
        """Launch and wait (blocking) until it is ready."""
        self.launch()
        deadline = time.monotonic() + timeout
        while not self.is_ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker not ready within {timeout}s:\n{self.tail()}")
            time.sleep(0.2)
        return self

    async def wait_ready(self, timeout: float = 120) -> None:
        """Wait (on the loop) until the launched worker is ready."""
        deadline = time.monotonic() + timeout
        while not self.is_ready():
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start within {timeout}s; see {self.log_path}")
            await asyncio.sleep(0.2)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self, timeout: float = 30.0) -> int:
        """Graceful stop (SIGTERM to its session), as an orchestrator does it; SIGKILL and
        TimeoutExpired when it has not exited within `timeout`."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        """SIGKILL the worker's whole process group: no clean-up, no last commit."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def dump_stacks(self, settle_s: float = 1.0) -> None:
        """Ask the running worker to log every thread's and task's stack (mode's SIGUSR1)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGUSR1)
            time.sleep(settle_s)

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


async def wait_until(predicate: Callable[[], "asyncio.Future[bool] | bool"], timeout: float,
                     what: str, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)
