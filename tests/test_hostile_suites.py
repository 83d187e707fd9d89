"""Hostile suite files through the real CLI (docs/suites.md, "Hostile input: the rule").

Every file of ``tests/hostile_suites/`` runs as ``python -m harness.cli run FILE --out TMP --quiet``
in a subprocess with a wall-clock timeout and a data-segment limit (the files to be refused run
through the same ``harness.cli.main`` in one subprocess, one call each with its own alarm, so
that torch is imported once for them). Its first line says what
must happen: ``# expect: refuse KEY`` (exit 2, one stderr line naming the file, the key, the
value and what was expected, nothing measured) or ``# expect: rows STATUS=N ...`` (exit 0, or 1
with a ``nothing measured`` line when no row is ``ok``; the summary counts exactly these, and the
stored rows are those of every status but ``duplicate``).
A ``# args:`` line adds arguments (``{out}`` is the results folder); ``# pad-to: N`` pads the file
with comment lines to N bytes. Either way: no traceback, and no file outside the results folder.
"""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.store import load_runs
from harness.suite import load_suite

CORPUS = Path(__file__).parent / "hostile_suites"
FILES = sorted(CORPUS.glob("*.toml"))
ROOT = Path(__file__).resolve().parent.parent
#: Bounds every corpus run is held to: wall time (s) and private writable memory (bytes, RLIMIT_DATA:
#: the heap and anonymous mappings, not the code of shared libraries, so a CUDA build of torch, whose
#: libraries map several GiB of address space, imports under it).
TIMEOUT_S = 120
ADDRESS_SPACE = 3 << 30


def header(path: Path) -> tuple[str, str, list[str], int]:
    """(``refuse``/``rows``, the key or the counts, extra arguments, pad-to bytes) of a corpus file."""
    lines = path.read_bytes().split(b"\n")
    m = re.fullmatch(r"# expect: (refuse|rows) (.+)", lines[0].decode())
    assert m, f"{path.name}: first line must be '# expect: refuse KEY' or '# expect: rows STATUS=N ...'"
    args, pad = [], 0
    for line in lines[1:3]:
        text = line.decode("utf-8", "replace")
        if text.startswith("# args: "):
            args = text[len("# args: "):].split()
        elif text.startswith("# pad-to: "):
            pad = int(text.split()[2])
    return m.group(1), m.group(2), args, pad


def limits() -> None:
    resource.setrlimit(resource.RLIMIT_DATA, (ADDRESS_SPACE, ADDRESS_SPACE))


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The CLI's environment: CPU description and ceilings cached in a folder of this module."""
    cache = tmp_path_factory.mktemp("cache")
    return dict(os.environ, LAYERBENCH_CACHE=str(cache), LAYERBENCH_CEILINGS=str(cache / "ceilings"),
                PYTHONPATH=str(ROOT))


def snapshot(root: Path, skip: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if skip not in p.parents and p != skip}


def run_cli(args: list[str], cwd: Path, env: dict[str, str], timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, preexec_fn=limits)


@dataclass(frozen=True)
class Outcome:
    """One corpus file's run: exit code, stderr, stdout, seconds, and whether any file appeared
    outside the results folder."""

    rc: int
    stderr: str
    stdout: str
    seconds: float
    outside: set[str]


def prepare(path: Path, root: Path) -> tuple[Path, Path, Path]:
    """(suite copy, results folder, cwd) under ``root``; the copy padded as its header asks."""
    _, _, _, pad = header(path)
    suite = root / "in" / path.name
    suite.parent.mkdir(parents=True)
    data = path.read_bytes()
    suite.write_bytes(data + b"# padding\n" * max(0, (pad - len(data)) // 10 + 1) if pad else data)
    (root / "parent" / "cwd").mkdir(parents=True)
    return suite, root / "parent" / "out", root / "parent" / "cwd"


def outside(root: Path) -> set[str]:
    """Every path under ``root`` but the results folder (``parent/out``) and its content."""
    return snapshot(root, root / "parent" / "out")


BATCH = textwrap.dedent("""
    import contextlib, io, json, os, signal, sys, time, traceback
    from harness.cli import main
    class Hang(Exception):
        pass
    def alarm(*_):
        raise Hang("timeout")
    signal.signal(signal.SIGALRM, alarm)
    results = {}
    for name, argv, cwd in json.load(sys.stdin):
        os.chdir(cwd)
        err, out = io.StringIO(), io.StringIO()
        t0 = time.monotonic()
        signal.alarm(TIMEOUT)
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
                try:
                    rc = main(argv)
                except SystemExit as e:
                    rc = e.code if isinstance(e.code, int) else 1
                except BaseException:
                    traceback.print_exc()
                    rc = 1
        finally:
            signal.alarm(0)
        results[name] = [rc, err.getvalue(), out.getvalue(), time.monotonic() - t0]
    print(json.dumps(results))
""")


@pytest.fixture(scope="module")
def refusals(tmp_path_factory: pytest.TempPathFactory, env: dict[str, str]) -> dict[str, Outcome]:
    """Every file to be refused, through ``harness.cli.main`` in one subprocess (limits as above)."""
    base = tmp_path_factory.mktemp("refuse")
    jobs, before = [], {}
    for path in FILES:
        if header(path)[0] != "refuse":
            continue
        suite, out, cwd = prepare(path, base / path.stem)
        before[path.stem] = outside(base / path.stem)
        jobs.append([path.stem, ["run", str(suite), "--out", str(out), "--quiet", "--calibrate", "never"], str(cwd)])
    proc = subprocess.run([sys.executable, "-c", BATCH.replace("TIMEOUT", str(TIMEOUT_S))], input=json.dumps(jobs),
                          env=env, capture_output=True, text=True, timeout=TIMEOUT_S * 4, preexec_fn=limits)
    assert proc.returncode == 0, proc.stderr
    done = json.loads(proc.stdout.strip().splitlines()[-1])
    return {name: Outcome(rc, err, out, secs, outside(base / name) ^ before[name])
            for name, (rc, err, out, secs) in done.items()}


def test_corpus_is_large_and_every_header_is_valid() -> None:
    kinds = Counter(header(p)[0] for p in FILES)
    assert len(FILES) >= 30 and kinds["refuse"] >= 20 and kinds["rows"] >= 10


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_hostile_suite(path: Path, tmp_path: Path, env: dict[str, str], refusals: dict[str, Outcome]) -> None:
    kind, expect, extra, _ = header(path)
    if kind == "refuse":
        got = refusals[path.stem]
        out = None
    else:
        suite, out, cwd = prepare(path, tmp_path)
        before = outside(tmp_path)
        t0 = time.monotonic()
        proc = run_cli(["run", str(suite), "--out", str(out), "--quiet", "--calibrate", "never",
                        *(a.replace("{out}", str(out)) for a in extra)], cwd, env)
        got = Outcome(proc.returncode, proc.stderr, proc.stdout, time.monotonic() - t0, outside(tmp_path) ^ before)
    assert "Traceback" not in got.stderr, got.stderr
    assert got.rc in (0, 1, 2), got.stderr
    assert got.outside == set(), "files written outside --out"
    assert got.seconds < TIMEOUT_S
    assert not Path("/tmp/layerbench-abs").exists()
    if kind == "refuse":
        lines = got.stderr.strip().splitlines()
        assert got.rc == 2 and len(lines) == 1, got.stderr
        m = re.fullmatch(r"layerbench run: error: (\S+): (\S+?)=(.+) is invalid: expected (.+)", lines[0])
        assert m and Path(m.group(1)).name == path.name and m.group(2) == expect, lines[0]
        assert len(lines[0]) < 1000 and "parquet" not in got.stdout
        return
    want = {k: int(v) for k, v in (item.split("=") for item in expect.split())}
    assert got.rc == (0 if want.get("ok") else 1), got.stderr       # nothing measured: the run fails
    if not want.get("ok"):
        assert got.stderr.strip().splitlines()[-1].startswith("nothing measured: "), got.stderr
    summary = re.search(r": ((?:\d+ \w+(?:, )?)+) \(0 already stored\)", got.stdout)
    assert summary, got.stdout
    assert {k: int(n) for n, k in re.findall(r"(\d+) (\w+)", summary.group(1))} == want
    assert out is not None
    loaded = load_runs(out)
    assert loaded.refused == []
    assert dict(Counter(loaded.frame["status"])) == {k: v for k, v in want.items() if k != "duplicate"}
    assert loaded.frame["row_id"].is_unique


def test_refusals_name_the_same_key_in_process() -> None:
    """The CLI's key is the loader's ``SuiteError.key`` (a corpus header cannot drift from the code)."""
    from harness.suite import SuiteError
    for path in FILES:
        kind, key, _, pad = header(path)
        if kind != "refuse" or pad:
            continue
        with pytest.raises(SuiteError) as e:
            load_suite(path)
        assert e.value.key == key, path.name


@pytest.mark.parametrize("processes", [1, 3])
def test_a_million_cases_stream_within_bounded_memory(tmp_path: Path, env: dict[str, str], processes: int) -> None:
    """10^6 cases (the largest suite accepted) start measuring at once, in bounded memory: the first
    rows are stored within seconds under a 3 GiB data-segment limit, and Ctrl-C keeps them; in one
    process, and in 3 worker processes (the CLI's default: cases go through them in blocks)."""
    suite = tmp_path / "million.toml"
    suite.write_text('name = "million"\nbudget_s = 0.001\nwarmup_s = 0\nmin_reps = 1\n[[sweep]]\nlayer = "relu"\n'
                     'input = "{b}x{c}"\naxes = { b = { start = 1, stop = 1000, step = 1 }, '
                     'c = { start = 1, stop = 1000, step = 1 } }\n')
    assert load_suite(suite).count() == 1_000_000
    out = tmp_path / "out"
    limit = ADDRESS_SPACE
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", str(suite), "--out", str(out), "--quiet",
                             "--calibrate", "never", "--processes", str(processes)],
                            env={**env, "PYTHONFAULTHANDLER": "1"},  # a crash shows its stack
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_DATA, (limit, limit)))
    try:
        first = None
        while time.monotonic() - t0 < 90 and proc.poll() is None:
            journals = list(out.glob("million-cpu-*/rows-1of1.jsonl"))
            if journals and len(journals[0].read_bytes().splitlines()) >= 5:
                first = time.monotonic() - t0
                break
            time.sleep(0.1)
        assert first is not None and first < 90, "no rows within 90 s"
        rss = int(re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{proc.pid}/status").read_text()).group(1)) * 1024
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "Traceback" not in err, err
    stored = load_runs(out).frame
    assert len(stored) >= 5 and (stored["status"] == "ok").all() and stored["row_id"].is_unique
    assert rss < limit
    # every process measured each row; one beside a slow host canary may be set aside, never below 2
    assert stored["processes"].between(min(processes, 2), processes).all()
    print(f"10^6 cases, {processes} process(es): first 5 rows stored after {first:.1f} s, "
          f"peak RSS {rss / 2**20:.0f} MiB")
