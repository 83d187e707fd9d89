"""``layerbench`` command line. Subcommands render what the library returns; none computes.
Heavy imports (torch, pandas) happen inside the subcommand that needs them, so ``--help`` and
``--version`` are fast."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Sequence

from harness import __version__
from harness.cli import count, fleet, machine, predict, results, run
from harness.errors import LayerbenchError


class Parser(argparse.ArgumentParser):
    """An argument parser that may build its epilog only when help is shown (``lazy_epilog``)."""

    lazy_epilog = None

    def format_help(self) -> str:
        if self.lazy_epilog is not None:
            self.epilog = self.lazy_epilog()
        return super().format_help()


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="layerbench", description="How fast neural-network layers really run, next to what the "
                    "arithmetic says they should (README: commands, columns, conventions).")
    parser.add_argument("--version", action="version", version=f"layerbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for module in (count, machine, run, results, fleet, predict):
        module.add(sub)
    sub.choices["count"].lazy_epilog = count.layer_help
    sub.choices["count"].formatter_class = argparse.RawDescriptionHelpFormatter
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except LayerbenchError as e:
        print(f"layerbench {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"layerbench {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


def entry() -> None:
    """The ``layerbench`` command (``python -m harness.cli`` too): ``main`` and its exit status. An
    interrupted command (130) leaves at once once its output is flushed (``os._exit``): what it
    measured is stored and fsync'd by then, and the teardown of native libraries after a Ctrl-C
    landed inside their threads (libtorch, OpenMP) can segfault (twice in about 40 full test runs,
    exit -11 after "interrupted", no Python frame). Not with Ray loaded: its shutdown hook must run."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)   # started with SIGINT ignored: Ctrl-C still stops
    rc = main()
    if rc == 130 and "ray" not in sys.modules:
        for flush in (sys.stdout.flush, sys.stderr.flush, logging.shutdown):
            with contextlib.suppress(OSError, ValueError):      # a reader gone with the Ctrl-C: nothing to say
                flush()
        os._exit(rc)
    raise SystemExit(rc)


if __name__ == "__main__":
    entry()
