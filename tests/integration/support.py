"""Running real workers and reading real topics from integration tests."""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Mapping, Optional

ROOT = Path(__file__).resolve().parents[2]
FAUST = str(Path(sys.executable).with_name("faust"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Worker:
    """A `faust -A app.main worker` subprocess with its own settings and log file."""

    def __init__(self, env: Mapping[str, str], log_path: Path) -> None:
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.proc: Optional[subprocess.Popen[bytes]] = None

    def start(self, timeout: float = 90.0) -> "Worker":
        log = self.log_path.open("ab")
        offset = log.tell()
        self.proc = subprocess.Popen([FAUST, "-L", "uvloop", "-A", "app.main", "worker", "-l", "info"],
                                     env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_path.read_bytes()[offset:].decode(errors="replace")
            if "[^Worker]: Ready" in text:
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.tail()}")
            time.sleep(0.2)
        raise TimeoutError(f"worker not ready within {timeout}s:\n{self.tail()}")

    def stop(self, timeout: float = 30.0) -> int:
        """Graceful stop (SIGTERM), as an orchestrator does it."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
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
