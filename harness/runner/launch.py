"""Starting worker processes, the parent's side: a fork server with the measuring code imported once
(``ForkServer``; the server itself is ``harness.runner.forkserver``), or a fresh interpreter per
worker (``Spawn``, as before the server; the stability benchmark runs both).

This module imports no torch, so a command can start a run's fork server first thing (before it
imports torch itself) and let the server import torch on the other core meanwhile; ``run_suite``
takes the started launcher (``workers=``).

The fork server is one interpreter per run, started with the workers' environment (the OpenMP
wait policy is read when libgomp loads, so it is fixed per server). Protocol (text lines over the
server's stdin/stdout): the server says ``ready`` once it has imported what workers need; then the
parent writes a job file's path, the server forks, answers ``pid N``, waits for the worker and
answers ``exit C`` (C as ``subprocess`` reports it: negative for a signal).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from typing import Protocol

#: Seconds the parent waits for the server to import what workers need and for a fork to answer.
READY_TIMEOUT_S = 120.0
#: How workers start: ``fork-server`` (default) or ``spawn`` (a fresh interpreter each).
LAUNCHERS = ("fork-server", "spawn")
#: The code a fresh worker interpreter and the server run (``-c``, not ``-m``: the package imports
#: these modules, and running one as ``__main__`` too would load it twice).
SPAWN = "import sys; from harness.runner.worker import run_job; run_job(sys.argv[1])"
SERVE = "import sys; from harness.runner.forkserver import serve; serve(int(sys.argv[1]))"


def omp_policy(omp_wait: str) -> str:
    """OMP_WAIT_POLICY's spelling of an ``--omp-wait`` policy (``harness.record.OMP_WAIT_POLICIES``,
    checked by the caller; not imported here: the record imports pyarrow, and this module is loaded
    before the fork server starts)."""
    return omp_wait.upper()


def omp_env(omp_wait: str | None) -> dict[str, str]:
    """The environment of a worker: this one, with OMP_WAIT_POLICY set when asked, and Python's
    path so that the job's functions import."""
    env = dict(os.environ)
    if omp_wait is not None:
        env["OMP_WAIT_POLICY"] = omp_policy(omp_wait)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return env


class WorkerHandle(Protocol):
    """One running worker: ``poll`` its exit code (``None`` while it runs), ``kill`` it."""

    pid: int

    def poll(self, timeout: float = 0.0) -> int | None: ...
    def kill(self) -> None: ...
    def wait(self) -> int: ...


class Launcher(Protocol):
    """Starts one worker on a job file; ``close`` when the run is done with workers.
    ``worker_parent``: the pid a worker's parent has (it stops when that process is gone)."""

    worker_parent: int

    def start(self, job_path: str) -> WorkerHandle: ...
    def settle(self) -> None: ...
    def close(self) -> None: ...


class _Spawned:
    """A worker that is its own fresh interpreter (``python -c SPAWN JOB``)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc, self.pid = proc, proc.pid

    def poll(self, timeout: float = 0.0) -> int | None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            return self.proc.wait(timeout) if timeout > 0 else self.proc.poll()
        return None

    def kill(self) -> None:
        self.proc.kill()

    def wait(self) -> int:
        return self.proc.wait()


class Spawn:
    """``Launcher`` of fresh interpreters: each worker imports torch itself (about 2 s)."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = dict(env)
        self.worker_parent = os.getpid()

    def start(self, job_path: str) -> WorkerHandle:
        proc = subprocess.Popen([sys.executable, "-c", SPAWN, job_path], env=self.env, stdin=subprocess.DEVNULL)
        return _Spawned(proc)

    def settle(self) -> None:
        """Nothing runs before the first worker."""

    def close(self) -> None:
        pass


class _Forked:
    """A worker forked by the server: its exit code arrives as the server's next line."""

    def __init__(self, server: ForkServer, pid: int) -> None:
        self.server, self.pid = server, pid
        self.code: int | None = None

    def poll(self, timeout: float = 0.0) -> int | None:
        if self.code is None:
            line = self.server.read_line(timeout)
            if line is not None:
                self.code = _answer(line, "exit")
        return self.code

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)

    def wait(self) -> int:
        while self.code is None:
            self.poll(READY_TIMEOUT_S)
        return self.code


class ForkServer:
    """``Launcher`` that forks workers from one preloaded interpreter (module docstring). Starting
    it returns at once; the first ``start`` waits until the server has imported ``PRELOAD``."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", SERVE, str(os.getpid())],
                                     env=dict(env), stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        self.worker_parent = self.proc.pid
        self.ready = False
        self._buffer = b""

    def start(self, job_path: str) -> WorkerHandle:
        self.settle()
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{job_path}\n".encode())
        return _Forked(self, _answer(self._expect(), "pid"))

    def settle(self) -> None:
        """Wait until the server has imported ``PRELOAD``: until then it is this run's own load on
        the CPUs, which ``--threads auto`` must not take for another tenant's."""
        if not self.ready:
            _answer(self._expect(), "ready")
            self.ready = True

    def _expect(self) -> str:
        line = self.read_line(READY_TIMEOUT_S)
        if line is None:
            raise RuntimeError(f"the worker fork server did not answer within {READY_TIMEOUT_S:g} s "
                               f"(exit code {self.proc.poll()})")
        return line

    def read_line(self, timeout: float) -> str | None:
        """The server's next line, waiting at most ``timeout`` seconds; ``RuntimeError`` if it died."""
        deadline = time.monotonic() + timeout
        stdout = self.proc.stdout
        assert stdout is not None
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([stdout], [], [], max(0.0, left))
            if not ready:
                return None
            chunk = os.read(stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError(f"the worker fork server exited (code {self.proc.wait()})")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _answer(line: str, word: str) -> int:
    """The number after ``word`` in a server line (``pid 123``, ``exit -9``), or ``ready`` -> 0."""
    head, _, value = line.partition(" ")
    if head != word:
        raise RuntimeError(f"the worker fork server said {line!r}, expected {word!r}")
    return int(value) if value else 0


def launcher(kind: str, env: Mapping[str, str]) -> Launcher:
    """A ``Launcher`` of ``kind`` (``LAUNCHERS``) for workers with environment ``env``."""
    return ForkServer(env) if kind == "fork-server" else Spawn(env)
