"""The architecture holds: the pipeline reads top to bottom with no import circle (import-linter's
contracts in pyproject.toml), every deferred import says why, no module outside the backends and
the device descriptions asks a device string what kind of device it is, and a run looks its
backend up once."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "harness"
#: Where device kinds are known: the backends, the device descriptions, and the upgrade of files
#: written before rows stored their device's facts (it reads the two device types that existed then).
DEVICE_KNOWLEDGE = ("backends", "devices")
LEGACY = ("store/upgrade.py",)
#: A device-type test: comparing or prefix-matching a device string with a device type, or naming
#: a device's main memory.
DEVICE_TEST = re.compile(r"""(==|!=)\s*["'](cpu|cuda)["']|startswith\(\s*["'](cpu|cuda)|["'](HBM|DRAM)["']""")


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py"))


def test_import_contracts_hold():
    """``lint-imports`` (the layers and acyclic-siblings contracts in pyproject.toml) passes."""
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    if not Path(exe).exists():
        pytest.fail("lint-imports is not installed (the test extra brings import-linter)")
    got = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert got.returncode == 0, got.stdout[-3000:]
    assert "2 kept, 0 broken" in got.stdout


def _deferred_imports(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every import statement inside a function of ``path``."""
    source = path.read_text()
    lines = source.splitlines()
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, (ast.Import, ast.ImportFrom)):
                    out.append((inner.lineno, lines[inner.lineno - 1]))
    return sorted(set(out))


def test_every_deferred_import_says_why():
    """An import inside a function hides the module graph: each one carries ``# deferred: <reason>``
    (the command line's start-up time, an optional extra, a heavy library a path rarely needs)."""
    silent = [f"{p.relative_to(ROOT)}:{n}: {text.strip()}" for p in _modules()
              for n, text in _deferred_imports(p) if "# deferred:" not in text]
    assert not silent, "\n".join(silent)


def test_no_device_type_test_outside_the_backends():
    found = []
    for p in _modules():
        rel = p.relative_to(PACKAGE).as_posix()
        if rel.split("/")[0] in DEVICE_KNOWLEDGE or rel in LEGACY:
            continue
        for n, line in enumerate(p.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if DEVICE_TEST.search(code):
                found.append(f"{rel}:{n}: {line.strip()}")
    assert not found, "\n".join(found)


def test_the_pattern_finds_device_type_tests():
    """The check above can fail: it sees each form of the test it forbids."""
    for bad in ['if device == "cuda":', "x.startswith('cpu')", 'name = "HBM" if gpu else "DRAM"']:
        assert DEVICE_TEST.search(bad), bad
    for fine in ['device: str = "cpu"', 'resolve_device("cpu")', "device.main_memory"]:
        assert not DEVICE_TEST.search(fine), fine


def test_a_run_looks_its_backend_up_once(tmp_path):
    """``get_backend`` runs at most once in a run's process (resolving the device) and never in a
    worker: the resolved ``Device`` travels in the context and the jobs."""
    from harness.backends import get_backend
    from harness.runner import run_suite
    from harness.runner.worker import WorkerJob, worker_main
    from harness.suite import parse_suite
    from harness.timing import measure

    calls = []

    def watch(frame, event, arg):
        if event == "call" and frame.f_code is get_backend.__code__:
            calls.append(frame.f_code.co_name)

    suite = parse_suite({"name": "once", "budget_s": 0.01, "warmup_s": 0.0, "min_reps": 3,
                         "sweep": [{"layer": "relu", "input": "{b}x16", "axes": {"b": [1, 2, 3]}}]})
    sys.setprofile(watch)
    try:
        r = run_suite(suite, out=tmp_path, progress=False, profile=True, measure_fn=measure)
    finally:
        sys.setprofile(None)
    assert r.statuses == {"ok": 3}
    assert len(calls) <= 1, calls
    # a worker's whole job, in this process: no lookup at all
    from harness.backends import resolve_device
    from harness.runner.context import make_context
    ctx = make_context(suite, resolve_device("cpu"), ["fp32"], None, "hot", (1, 1), "once-worker")
    job = WorkerJob(ctx=ctx, cases=tuple(suite.cases()), measure_fn=measure, profile=True,
                    journal=str(tmp_path / "journal.jsonl"))
    calls.clear()
    sys.setprofile(watch)
    try:
        worker_main(job)
    finally:
        sys.setprofile(None)
    assert calls == []
    assert (tmp_path / "journal.jsonl").read_text().count('"row_id"') == 3
