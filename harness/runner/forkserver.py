"""The fork server: the process workers are forked from (its parent's side, ``ForkServer``, is in
``harness.runner.launch``).

It is one interpreter per run, started with the workers' environment. It imports torch and the
measuring code (``PRELOAD``) and nothing else happens in it: it never runs a tensor op, so it holds
no OpenMP thread pool, no allocator cache and no oneDNN primitive cache for a worker to inherit.
Each worker is a ``fork`` of it: as fresh as a spawned process in what affects timing, and ready in
milliseconds instead of seconds (an interpreter start plus ``import torch``). Workers run one at a
time (never side by side: they would contend).

It speaks the protocol ``harness.runner.launch`` describes, and dies with its parent
(``PR_SET_PDEATHSIG``, and the end of its stdin), each worker with the server.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import sys
import traceback
from typing import IO

from harness.runner.worker import die_with_parent, run_job

#: What the server imports before it forks: the worker's code (torch, counting, timing, profiling),
#: what counting imports on first use (attention is counted under FakeTensorMode) and what autograd
#: imports on a process's first backward (``torch.fx.experimental.symbolic_shapes`` and sympy: 0.55 s
#: of a worker's warm-up otherwise).
PRELOAD = ("harness.runner.worker", "torch._subclasses.fake_tensor", "torch.autograd.profiler",
           "torch.fx.experimental.symbolic_shapes")

def serve(parent_pid: int) -> None:
    """The server's loop: import ``PRELOAD``, say ``ready``, then fork one worker per job line."""
    die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)       # Ctrl-C stops the run's process, which stops this
    for name in PRELOAD:
        importlib.import_module(name)
    out = sys.stdout.buffer
    _say(out, "ready")
    server = os.getpid()
    for line in sys.stdin:
        path = line.strip()
        if not path:
            continue
        pid = os.fork()
        if pid == 0:
            _child(path, server)
        _say(out, f"pid {pid}")
        _, status = os.waitpid(pid, 0)
        _say(out, f"exit {os.waitstatus_to_exitcode(status)}")
    os._exit(0)             # stdin closed: the run is over. Nothing to flush or free (every line was
    #                         flushed, no worker is left), and tearing down torch would keep the run's
    #                         ``close`` waiting ~0.9 s


def _child(path: str, server: int) -> None:
    """In a forked worker: the protocol pipes closed, stdout to stderr, Ctrl-C as usual; run the job."""
    code = 1
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(2, 1)
        die_with_parent(server)
        run_job(path)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except KeyboardInterrupt:                  # Ctrl-C reaches the whole group: the run says it was interrupted
        code = 130
    except BaseException:                      # noqa: BLE001 - a worker's failure is its exit code
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os._exit(code)


def _say(out: IO[bytes], text: str) -> None:
    """One protocol line; a parent that stopped reading (it refused its suite before starting a worker)
    ends the server quietly."""
    try:
        out.write(f"{text}\n".encode())
        out.flush()
    except BrokenPipeError:
        os._exit(0)

