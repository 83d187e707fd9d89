"""Faults against the real store (docs/store.md, "What the store guarantees"): SIGKILL at random points
and inside the Parquet commit, a torn journal, a truncated Parquet file among good runs, a full
disk (RLIMIT_FSIZE), two writers on one run, hostile result files and pytest-benchmark JSON.
Processes are real; the store is never mocked."""

from __future__ import annotations

import json
import math
import os
import random
import resource
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_runner import SUITE, fake_measure, json_to_toml

from harness.record import RunMeta
from harness.runner import run_suite
from harness.store import COMMIT_DELAY_ENV, load_runs, read_journal, write_parquet
from harness.suite import load_suite, parse_suite

ROOT = Path(__file__).resolve().parent.parent
FAST = dict(SUITE, budget_s=0.001, warmup_s=0, min_reps=1)


def suite_file(tmp_path: Path) -> Path:
    p = tmp_path / "tiny.toml"
    p.write_text(json_to_toml(FAST))
    return p


def child(tmp_path: Path, out: Path, delay: float, env: dict[str, str] | None = None, run_id: str = "tiny-cpu-k",
          **popen) -> subprocess.Popen:
    """``run_suite`` of the tiny suite (10 rows) in a subprocess, each case taking ``delay`` s."""
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r}); sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_runner import fake_measure
        from harness.suite import load_suite
        from harness.runner import run_suite
        run_suite(load_suite({str(suite_file(tmp_path))!r}), out={str(out)!r}, measure_fn=fake_measure(delay={delay}),
                  progress=False, run_id={run_id!r})
    """)
    return subprocess.Popen([sys.executable, "-c", script], env=dict(os.environ, **(env or {})), **popen)


def stored_ids(out: Path) -> list[str]:
    loaded = load_runs(out)
    assert loaded.refused == []
    return list(loaded.frame["row_id"])


def resume_and_check(tmp_path: Path, out: Path, before: list[str]) -> None:
    """Resume completes the run: every row stored before is still there, none twice, 10 in all."""
    r = run_suite(load_suite(suite_file(tmp_path)), out=out, resume=True, measure_fn=fake_measure(), progress=False)
    assert r.run_id == "tiny-cpu-k"
    after = load_runs(out).frame
    assert len(after) == 10 and after["row_id"].is_unique and set(before) <= set(after["row_id"])
    assert not list(r.run_dir.glob("rows-*.jsonl")) and not list(r.run_dir.glob(".*.tmp"))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sigkill_at_random_points_then_resume(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    rows, extra = rng.randint(1, 10), rng.uniform(0, 0.1)        # kill after this many rows, then this many s
    out = tmp_path / "res"
    proc = child(tmp_path, out, 0.05)
    journal = out / "tiny-cpu-k" / "rows-1of1.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and len(read_journal(journal)) < rows and proc.poll() is None:
        time.sleep(0.01)
    time.sleep(extra)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = stored_ids(out)
    assert len(before) == len(set(before)) >= min(rows, 10) - 1
    resume_and_check(tmp_path, out, before)


def test_sigkill_inside_the_parquet_commit(tmp_path: Path) -> None:
    """Killed after the new part is written and fsync'ed, before the rename: the journal holds every row."""
    out = tmp_path / "res"
    proc = child(tmp_path, out, 0.0, {COMMIT_DELAY_ENV: "30"})
    run_dir = out / "tiny-cpu-k"
    deadline = time.time() + 120
    while time.time() < deadline and not list(run_dir.glob(".part-1of1.parquet.*.tmp")):
        time.sleep(0.02)
    assert list(run_dir.glob(".part-1of1.parquet.*.tmp")), "the commit window was not reached"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "part-1of1.parquet").exists() and len(read_journal(run_dir / "rows-1of1.jsonl")) == 10
    before = stored_ids(out)
    assert len(before) == 10
    resume_and_check(tmp_path, out, before)


def test_torn_journal_and_garbage_lines(tmp_path: Path) -> None:
    out = tmp_path / "res"
    proc = child(tmp_path, out, 0.0, {COMMIT_DELAY_ENV: "30"})
    journal = out / "tiny-cpu-k" / "rows-1of1.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and len(read_journal(journal)) < 10:
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    lines = journal.read_text().splitlines(keepends=True)
    assert len(lines) == 10
    # rows 0-5 intact; garbage, a JSON list and a foreign object in the middle; row 6 cut mid-JSON at the end
    journal.write_text("".join(lines[:3]) + "\x00garbage{{\n" + "[1, 2]\n" + '{"row_id": 5}\n' + "".join(lines[3:6])
                       + lines[6][: len(lines[6]) // 2])
    before = stored_ids(out)
    assert len(before) == 6
    resume_and_check(tmp_path, out, before)


def test_truncated_parquet_among_good_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s = parse_suite(FAST, "tiny.toml")
    for rid in ("tiny-cpu-a", "tiny-cpu-b", "tiny-cpu-bad"):
        run_suite(s, out=tmp_path, measure_fn=fake_measure(), progress=False, run_id=rid)
    bad = tmp_path / "tiny-cpu-bad" / "part-1of1.parquet"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    loaded = load_runs(str(tmp_path / "tiny-cpu-*"))
    assert len(loaded.frame) == 20 and set(loaded.frame["run_id"]) == {"tiny-cpu-a", "tiny-cpu-b"}
    assert len(loaded.refused) == 1 and loaded.refused[0].startswith(f"{bad}: not a readable Parquet file")
    from harness.cli import main
    runs = str(tmp_path / "tiny-cpu-*")
    for argv in (["export", runs, "--format", "csv", "-o", str(tmp_path / "x.csv")],
                 ["compare", str(tmp_path / "tiny-cpu-a"), str(tmp_path / "tiny-cpu-bad"), "--to",
                  str(tmp_path / "tiny-cpu-b")],
                 ["report", runs, "--out", str(tmp_path / "report")]):
        code = main(argv)
        err = capsys.readouterr().err
        assert code in (0, 1) and "Traceback" not in err, (argv[0], err)
        assert sum(str(bad) in line for line in err.splitlines()) == 1, (argv[0], err)


def fsize_limit(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_full_disk_stops_with_one_line_and_resume_completes(tmp_path: Path) -> None:
    """RLIMIT_FSIZE in the child (SIGXFSZ ignored): writes past 20 kB fail as on a full disk."""
    out = tmp_path / "res"
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(suite_file(tmp_path)), "--out", str(out),
                           "--quiet", "--calibrate", "never"], capture_output=True, text=True, timeout=300,
                          preexec_fn=fsize_limit(20_000), env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("layerbench run: error:")]
    assert len(errors) == 1 and "--resume" in errors[0] and "File too large" in errors[0], proc.stderr
    run_dir = next(out.glob("tiny-cpu-*"))
    before = stored_ids(out)
    assert 1 <= len(before) < 10
    r = run_suite(load_suite(suite_file(tmp_path)), out=out, resume=True, measure_fn=fake_measure(), progress=False)
    assert r.run_dir == run_dir and r.already_done == len(before)
    after = load_runs(out).frame
    assert len(after) == 10 and after["row_id"].is_unique and set(before) <= set(after["row_id"])


def test_two_writers_on_one_run(tmp_path: Path) -> None:
    out = tmp_path / "res"
    first = child(tmp_path, out, 2.0, stderr=subprocess.PIPE, text=True)     # 20 s: the second comes meanwhile
    journal = out / "tiny-cpu-k" / "rows-1of1.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and len(read_journal(journal)) < 1:
        time.sleep(0.02)
    second = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(suite_file(tmp_path)), "--out", str(out),
                             "--resume", "--quiet", "--calibrate", "never"], capture_output=True, text=True,
                            timeout=300, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert second.returncode == 2 and "Traceback" not in second.stderr, second.stderr
    errors = [line for line in second.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and f"being written by pid {first.pid}" in errors[0], second.stderr
    rows = load_runs(out).frame
    assert len(rows) == 10 and rows["row_id"].is_unique


def _good(tmp_path: Path) -> pa.Table:
    r = run_suite(parse_suite(FAST, "tiny.toml"), out=tmp_path / "good", measure_fn=fake_measure(), progress=False,
                  run_id="tiny-cpu-good")
    return pq.read_table(r.parquet)


def _set(table: pa.Table, name: str, values: list, kind: pa.DataType | None = None) -> pa.Table:
    array = pa.array(values, type=kind)
    return table.set_column(table.schema.get_field_index(name), pa.field(name, array.type), array)


def test_hostile_result_files_refused_one_line_each(tmp_path: Path) -> None:
    good = _good(tmp_path)
    n = good.num_rows
    ok = [s == "ok" for s in good.column("status").to_pylist()]
    hostile = {
        "wrong-type": _set(good, "flops", ["many"] * n),
        "inf": _set(good, "peak_flops_s", [math.inf] * n),
        "inf-sample": _set(good, "samples_s", [[1e-3, -math.inf]] * n),
        "huge-string": _set(good, "family", ["f" * 200_000] * n),
        "huge-number": _set(good, "flops", [2**64 - 1] * n, pa.uint64()),
    }
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    for name, table in hostile.items():
        pq.write_table(table, bad_dir / f"part-{name}.parquet")
    (bad_dir / "part-junk.parquet").write_bytes(os.urandom(4096))
    loaded = load_runs([tmp_path / "good", bad_dir])
    assert len(loaded.frame) == n
    refused = sorted(loaded.refused)
    assert len(refused) == len(hostile) + 1 and all("\n" not in line and len(line) < 400 for line in refused)
    by_file = {Path(line.split(":")[0]).stem.removeprefix("part-"): line for line in refused}
    assert "column flops: string" in by_file["wrong-type"] and "column flops: uint64" in by_file["huge-number"]
    assert "column peak_flops_s: infinite values" in by_file["inf"]
    assert "column samples_s: infinite values" in by_file["inf-sample"]
    assert "column family: a value of 200,000 characters" in by_file["huge-string"]
    assert "not a readable Parquet file" in by_file["junk"]
    # NaN means "no value": read as null, the file loads
    nan = _set(good, "time_median_s", [math.nan if k else None for k in ok])
    pq.write_table(nan, tmp_path / "nan.parquet")
    loaded = load_runs(tmp_path / "nan.parquet")
    assert loaded.refused == [] and loaded.frame["time_median_s"].isna().all()


def test_writer_stores_nonfinite_numbers_as_null_and_keeps_foreign_lines(tmp_path: Path) -> None:
    """A row whose statistic is NaN/inf is stored with null there (readable), and a journal line that
    does not fit the schema is kept aside in rejected-1of1.jsonl, never dropped or fatal."""
    good = _good(tmp_path)
    rec = good.to_pylist()[0]
    rec.update(run_id="tiny-cpu-w", row_id="m:cpu:nan", time_median_s=math.nan, samples_s=[math.inf, 1e-3])
    foreign = dict(rec, row_id="m:cpu:foreign", flops="many")
    run_dir = tmp_path / "w" / "tiny-cpu-w"
    run_dir.mkdir(parents=True)
    with open(run_dir / "rows-1of1.jsonl", "w") as f:
        f.write(json.dumps(rec) + "\n" + json.dumps(foreign) + "\n")
    from harness.store import RunWriter
    RunWriter(run_dir, (1, 1), RunMeta(run_id="tiny-cpu-w")).finish()
    loaded = load_runs(run_dir)
    assert loaded.refused == [] and list(loaded.frame["row_id"]) == ["m:cpu:nan"]
    row = loaded.frame.iloc[0]
    assert row["time_median_s"] is None or math.isnan(row["time_median_s"])
    assert list(row["samples_s"])[1] == 1e-3 and math.isnan(list(row["samples_s"])[0])      # null in the list
    assert [json.loads(x)["row_id"] for x in (run_dir / "rejected-1of1.jsonl").read_text().splitlines()] == \
        ["m:cpu:foreign"]


def test_a_run_never_appends_to_another_suites_run(tmp_path: Path) -> None:
    from harness.store import StoreError
    s = parse_suite(FAST, "tiny.toml")
    run_suite(s, out=tmp_path, measure_fn=fake_measure(), progress=False, run_id="tiny-cpu-x")
    other = parse_suite(dict(FAST, name="other"), "other.toml")
    with pytest.raises(StoreError, match="a run of suite 'tiny', not 'other'"):
        run_suite(other, out=tmp_path, resume=True, measure_fn=fake_measure(), progress=False, run_id="tiny-cpu-x")
    assert set(load_runs(tmp_path / "tiny-cpu-x").frame["suite"]) == {"tiny"}


@pytest.mark.parametrize("run_id", ["../escape", "/tmp/abs-run", "a/b", ".", "..", "*", "x" * 129, "r\u00e9"])
def test_run_id_is_validated_like_a_name(tmp_path: Path, run_id: str) -> None:
    from harness.errors import SpecError
    out = tmp_path / "out"
    with pytest.raises(SpecError, match=r"run_id=.* is invalid: expected 1-128 letters"):
        run_suite(parse_suite(FAST, "tiny.toml"), out=out, measure_fn=fake_measure(), progress=False, run_id=run_id)
    assert sorted(p.name for p in tmp_path.iterdir()) in ([], ["out"]) and not Path("/tmp/abs-run").exists()
    assert not out.exists() or list(out.iterdir()) == []


PB_GOOD = {"machine_info": {"node": "h", "cpu": {"brand_raw": "X"}}, "commit_info": {}, "datetime": "2026-01-01",
           "version": "4.0.0", "benchmarks": [{"name": "test_a", "fullname": "t.py::test_a", "group": None,
                                              "params": None, "extra_info": {},
                                              "stats": {"min": 1e-3, "max": 2e-3, "mean": 1.5e-3, "stddev": 1e-4,
                                                        "rounds": 5, "median": 1.5e-3, "iqr": 1e-4, "q1": 1.4e-3,
                                                        "q3": 1.6e-3, "iqr_outliers": 0, "stddev_outliers": 0,
                                                        "outliers": "0;0", "ld15iqr": 1e-3, "hd15iqr": 2e-3,
                                                        "ops": 666.0, "total": 7.5e-3, "iterations": 1,
                                                        "data": [1e-3, 2e-3]}}]}


def _pb(**stats) -> dict:
    doc = json.loads(json.dumps(PB_GOOD))
    doc["benchmarks"][0]["stats"].update(stats)
    return doc


@pytest.mark.parametrize("name, content", [
    ("list", "[1, 2, 3]"),
    ("missing-benchmarks", json.dumps({"machine_info": {}})),
    ("benchmarks-not-list", json.dumps(dict(PB_GOOD, benchmarks={"a": 1}))),
    ("missing-stats", json.dumps(dict(PB_GOOD, benchmarks=[{"name": "t"}]))),
    ("nan-median", json.dumps(_pb(median=math.nan))),
    ("inf-min", json.dumps(_pb(min=math.inf))),
    ("huge-number", json.dumps(_pb(rounds=10**40))),
    ("string-median", json.dumps(_pb(median="fast"))),
    ("junk", "\x00{" * 1000),
])
def test_hostile_pytest_benchmark_json_refused_one_line(tmp_path: Path, name: str, content: str) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps(PB_GOOD))
    assert len(load_runs(good).frame) == 1 and load_runs(good).refused == []
    bad = tmp_path / f"{name}.json"
    bad.write_text(content)
    loaded = load_runs([good, bad])
    assert len(loaded.frame) == 1
    assert len(loaded.refused) == 1 and loaded.refused[0].startswith(str(bad)) and "\n" not in loaded.refused[0]


def test_fifty_megabytes_of_junk_json_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "big.json"
    bad.write_bytes(b'{"benchmarks": [' + b"7," * (25 << 20) + b"}")
    t0 = time.monotonic()
    loaded = load_runs(bad)
    assert len(loaded.refused) == 1 and loaded.refused[0].startswith(str(bad)) and time.monotonic() - t0 < 60


def test_write_parquet_roundtrip_after_hostile_reads(tmp_path: Path) -> None:
    """The good rows of a mixed folder can be written back and read identically (nothing lost on the way)."""
    good = _good(tmp_path)
    frame = load_runs(tmp_path / "good").frame
    write_parquet(frame, tmp_path / "copy.parquet")
    assert load_runs(tmp_path / "copy.parquet").frame["row_id"].tolist() == good.column("row_id").to_pylist()


def test_store_journal_torn_line_cut_and_rows_fsynced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store's journal goes through the shared helpers (harness.store.journal): a torn last line is
    never read and is cut off by the next writer, undecodable bytes read as U+FFFD (never fatal),
    and each appended row is fsync'ed before ``append`` returns."""
    from harness.record import Row
    from harness.store import RunWriter
    from harness.store import journal as J
    records = _good(tmp_path).to_pylist()
    run_dir = tmp_path / "j" / "tiny-cpu-good"
    run_dir.mkdir(parents=True)
    path = run_dir / "rows-1of1.jsonl"
    lines = [json.dumps(r, default=str).encode() + b"\n" for r in records[:4]]
    odd = lines[2].replace(b'"family": "', b'"family": "\xff', 1)          # one undecodable byte in a value
    torn = lines[3][: len(lines[3]) // 2]
    path.write_bytes(lines[0] + lines[1] + odd + torn)
    rows = read_journal(path)
    assert [r["row_id"] for r in rows] == [r["row_id"] for r in records[:3]]
    assert rows[2]["family"] == "\ufffd" + records[2]["family"]
    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(J.os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    writer = RunWriter(run_dir, (1, 1), RunMeta(run_id="tiny-cpu-good", suite="tiny"))
    try:
        assert path.read_bytes() == lines[0] + lines[1] + odd                  # the torn line is cut
        synced.clear()                                                         # (os.fsync is patched for all)
        writer.append(Row.from_record(records[3]))
        assert synced == [writer._fh.fileno()]
    finally:
        writer.close()
    assert [r["row_id"] for r in read_journal(path)] == [r["row_id"] for r in records[:4]]
    assert path.read_bytes().endswith(b"\n") and path.read_bytes().count(b"\n") == 4


def test_the_lock_file_goes_with_its_holder_and_a_lock_on_a_removed_file_is_taken_again(tmp_path, monkeypatch):
    """A run leaves no lock file behind; a process that opened the lock file just before its holder
    removed it takes the lock on the file the path names now, not on the removed one."""
    from harness.store import runs
    r = run_suite(parse_suite(SUITE), out=tmp_path, measure_fn=fake_measure, progress=False, profile=False)
    assert not list(r.run_dir.glob(".lock-*"))
    path = tmp_path / ".lock-x"
    first = runs._lock(path)
    with pytest.raises(runs.StoreError, match="being written by pid"):
        runs._lock(path)                                  # held: refused
    runs._unlock(first)
    assert not path.exists()
    seen: list[bool] = []
    real = runs._same_file

    def removed_once(fh, p):                              # the first file opened was removed meanwhile
        seen.append(real(fh, p))
        return len(seen) > 1 and seen[-1]

    monkeypatch.setattr(runs, "_same_file", removed_once)
    held = runs._lock(path)
    assert seen == [True, True] and path.read_text().startswith(f"pid {os.getpid()}")
    runs._unlock(held)
