"""The one harness that starts a payhook stack: `payhook serve`, `worker`, `beat` and `flower`
processes by name, each in a session of its own with its log in one folder. The demo, the soak
and the integration and fault tests all start their processes through it.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from pathlib import Path

import httpx

from worker.tooling.processes import children, free_port

READY_TIMEOUT_S = 60.0
LOG_TAIL_LINES = 15  # of a process's log, in the error when it would not stop


class StackError(Exception):
    """A process of the stack exited or did not become ready; the message names it and its log."""


def payhook(*args: str) -> list[str]:
    """The command line of `payhook ARGS` in this interpreter."""
    return [sys.executable, "-m", "worker.cli", *args]


class Stack:
    """Processes by name. A name's log is `<logs>/<name>.log`; a process started again under the
    same name appends to it, and readiness is read only from what it wrote since its start."""

    def __init__(
        self, env: dict[str, str], logs: Path, *, port: int | None = None, cwd: Path | None = None
    ) -> None:
        self.env = env
        self.logs = logs
        self.port = port or free_port()
        self.cwd = cwd
        self.named: dict[str, subprocess.Popen[bytes]] = {}
        self._log_start: dict[str, int] = {}

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ----------------------------------------------------------------- starting

    def start_receiver(self, *extra: str, name: str = "receiver") -> subprocess.Popen[bytes]:
        return self.start(name, payhook("serve", "--port", str(self.port), *extra))

    def start_worker(
        self,
        name: str = "worker",
        *,
        concurrency: int = 1,
        node: str | None = None,
        extra: Sequence[str] = (),
    ) -> subprocess.Popen[bytes]:
        """A prefork worker (no gossip, no mingle) whose Celery node is `node` (or `name`)."""
        return self.start(
            name,
            payhook(
                "worker", "--concurrency", str(concurrency), "--pool", "prefork",
                "--without-gossip", "--without-mingle", "-n", f"{node or name}@%h", *extra,
            ),
        )  # fmt: skip

    def start_beat(self, *extra: str, name: str = "beat") -> subprocess.Popen[bytes]:
        return self.start(name, payhook("beat", *extra))

    def start(
        self, name: str, command: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start `command` as `name`, in a session of its own, so that a signal to the group
        reaches a worker's prefork children too."""
        if name in self.named:
            raise StackError(f"{name} is already running")
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.log_of(name)
        self._log_start[name] = log.stat().st_size if log.exists() else 0
        with log.open("ab") as out:
            # Our own interpreter and fixed arguments: nothing here comes from a request.
            process = subprocess.Popen(  # noqa: S603
                command,
                env=self.env if env is None else env,
                cwd=self.cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.named[name] = process
        return process

    # ----------------------------------------------------------------- watching

    def log_of(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def log_text(self, name: str, *, since_start: bool = False) -> str:
        """The log of `name`; with `since_start`, only what its current process wrote."""
        log = self.log_of(name)
        if not log.exists():
            return ""
        with log.open("rb") as handle:
            if since_start:
                handle.seek(self._log_start.get(name, 0))
            return handle.read().decode(errors="replace")

    def ready(self, name: str) -> bool:
        """The receiver answers /readyz; a worker said "ready."; beat sent its first task."""
        command = self.named[name].args
        program = command[3] if isinstance(command, list) and len(command) > 3 else ""
        if program == "serve":
            try:
                return httpx.get(f"{self.base_url}/readyz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False
        if program == "beat":
            return "Scheduler: Sending" in self.log_text(name, since_start=True)
        if program == "worker":
            return "ready." in self.log_text(name, since_start=True)
        return True

    def wait_ready(self, *names: str, timeout: float = READY_TIMEOUT_S) -> None:
        """Wait until each of `names` (default: every running process) is ready."""
        waiting = list(names or self.named)
        self.wait_for(f"{waiting}", lambda: all(self.ready(name) for name in waiting), timeout)

    def wait_for(self, what: str, done: Callable[[], bool], timeout: float = 60) -> None:
        """Call `done()` until it answers true, checking that every process is alive."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            if done():
                return
            time.sleep(0.2)
        raise StackError(f"{what} not ready within {timeout:.0f} s; logs in {self.logs}")

    def check_alive(self) -> None:
        for name, process in self.named.items():
            if process.poll() is not None:
                raise StackError(
                    f"the {name} exited ({process.returncode}); see {self.log_of(name)}"
                )

    # ----------------------------------------------------------------- stopping

    def terminate(self, name: str, timeout: float = 30) -> int:
        """SIGTERM, as an orchestrator stops a process; return its exit status."""
        process = self.named.pop(name)
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            # The log's folder is gone once the test's temporary files are: show its end here.
            last = self.log_text(name, since_start=True).splitlines()[-LOG_TAIL_LINES:]
            raise StackError(
                f"{name} did not stop within {timeout:.0f} s of SIGTERM; the end of "
                f"{self.log_of(name)}:\n" + "\n".join(last)
            ) from None

    def kill(self, name: str) -> int:
        """SIGKILL the process and every process it started (an OOM kill, a lost host)."""
        process = self.named.pop(name)
        _kill_group(process)
        return process.pid

    def kill_child(self, name: str, rng: random.Random) -> int | None:
        """SIGKILL one prefork child of worker `name` (its pool starts another)."""
        pool = children(self.named[name].pid)
        if not pool:
            return None
        victim = rng.choice(pool)
        with suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)
        return victim

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM every process (a warm shutdown for workers), then SIGKILL what is left."""
        running = list(self.named.values())
        self.named.clear()
        for process in running:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in running:
            with suppress(subprocess.TimeoutExpired):
                process.wait(timeout=timeout)
            _kill_group(process)  # its pool, if the SIGTERM left any of it behind


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout=30)
