"""``run_suite(processes=N)``: real worker processes (``harness.runner.workers``), fake timers that
are module-level functions (a worker imports them by name)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from harness.runner import run_suite
from harness.store import load_results
from harness.suite import parse_suite
from harness.timing import Measurement

SUITE = {"name": "procs", "budget_s": 0.05,
         "sweep": [{"family": "relu", "layer": "relu", "input": "{b}x8", "axes": {"b": [1, 2, 3, 4]}}]}


def _process_index() -> int:
    """0, 1, 2, ... in the order worker processes first call the fake (files created exclusively)."""
    d = os.environ["LB_FAKE_DIR"]
    if "i" not in _STATE:
        for i in range(100):
            try:
                os.close(os.open(os.path.join(d, f"p{i}"), os.O_CREAT | os.O_EXCL))
                _STATE["i"] = i
                break
            except FileExistsError:
                continue
    return _STATE["i"]


_STATE: dict[str, int] = {}


def slow_second_process(fn, *, inputs, **kw):
    """1 ms per call, but 4 ms for batch 3 in the second process; the second process dies (SIGKILL)
    on batch 4 when LB_FAKE_KILL is set."""
    i, batch = _process_index(), inputs[0][0].shape[0]
    if batch == 4 and i == 1 and os.environ.get("LB_FAKE_KILL"):
        os.kill(os.getpid(), signal.SIGKILL)
    median = 4e-3 if (batch == 3 and i == 1) else 1e-3
    samples = tuple(median * (1 + 0.001 * k) for k in range(10))
    return Measurement(device="cpu", timer="fake", mode="hot", samples_s=samples, number=1, warmup_calls=0,
                       warmup_s=0.0, estimate_s=median, sampling_s=0.2, threads=1, gc_paused=True,
                       rotation=len(inputs), stop_reason="converged", target_rel_ci=0.01)


def _run(tmp_path, monkeypatch, **kw):
    fake_dir = tmp_path / "fake"
    fake_dir.mkdir()
    monkeypatch.setenv("LB_FAKE_DIR", str(fake_dir))
    return run_suite(parse_suite(SUITE), out=tmp_path / "out", measure_fn=slow_second_process, progress=False,
                     profile=False, **kw)


def test_three_processes_keep_every_median_and_find_the_split(tmp_path, monkeypatch, caplog):
    import logging
    import tempfile
    jobs = set(Path(tempfile.gettempdir()).glob("*.job"))
    with caplog.at_level(logging.INFO, logger="harness.runner"):
        r = _run(tmp_path, monkeypatch, processes=3)
    # each progress line names the process that measured it: 4 cases in each of 3 processes
    lines = [m for m in caplog.messages if "relu b=" in m]
    assert len(lines) == 12
    assert [sum(f"process {k}/3: " in m for m in lines) for k in (1, 2, 3)] == [4, 4, 4]
    assert set(Path(tempfile.gettempdir()).glob("*.job")) <= jobs          # job files removed
    assert r.statuses == {"ok": 4}
    f = load_results(r.run_dir)
    f["batch"] = [json.loads(a)["b"] for a in f["axes"]]
    f = f.set_index("batch").sort_index()
    assert (f["processes"] == 3).all() and (f["time_median_s"] == f["process_median_s"]).all()
    split = f.loc[3]
    m = 1.0045                                            # the median of samples m * (1 + 0.001 k), k < 10
    assert sorted(split["process_medians_s"]) == pytest.approx([m * 1e-3, m * 1e-3, m * 4e-3])
    assert split["time_median_s"] == pytest.approx(m * 1e-3) and split["process_spread"] == pytest.approx(3.0)
    assert split["stability"] in ("bimodal", "contended")
    calm = f.loc[[1, 2, 4]]
    assert (calm["process_spread"] == 0).all()
    # every process took the cases in a different order; the journals are gone once rows are stored
    assert not list(r.run_dir.glob("proc-*.jsonl"))
    assert sorted(p.name for p in (tmp_path / "fake").iterdir()) == ["p0", "p1", "p2"]


def slow_host_in_second_process(fn, *, inputs, **kw):
    """1 ms per call everywhere; the host canary beside batch 2 runs 1.5x slow in the second process
    (and its time with it), at the usual speed in every other process, extra ones included."""
    from harness.timing.canary import CanaryReport
    i, batch = _process_index(), inputs[0][0].shape[0]
    if i >= 3 and os.environ.get("LB_FAKE_KILL"):
        os.kill(os.getpid(), signal.SIGKILL)               # every extra process dies
    slow = 1.5 if (batch == 2 and i == 1) else 1.0
    samples = tuple(1e-3 * slow * (1 + 0.001 * k) for k in range(10))
    canary = CanaryReport(reference_s=30e-6 * slow, kept_s=(30e-6 * slow,) * 10, rejected=0)
    return Measurement(device="cpu", timer="fake", mode="hot", samples_s=samples, number=1, warmup_calls=0,
                       warmup_s=0.0, estimate_s=1e-3, sampling_s=0.2, threads=1, gc_paused=True,
                       rotation=len(inputs), stop_reason="converged", target_rel_ci=0.01, canary=canary)


def test_a_case_beside_a_slow_host_gets_one_more_process(tmp_path, monkeypatch, caplog):
    """Batch 2's second process ran beside a 1.5x slow canary: it is set aside, and that case alone
    is measured in one extra process, so three processes at the host's usual speed judge it."""
    import logging
    fake_dir = tmp_path / "fake"
    fake_dir.mkdir()
    monkeypatch.setenv("LB_FAKE_DIR", str(fake_dir))
    with caplog.at_level(logging.INFO, logger="harness.runner"):
        r = run_suite(parse_suite(SUITE), out=tmp_path / "out", measure_fn=slow_host_in_second_process,
                      progress=False, profile=False, processes=3)
    f = load_results(r.run_dir)
    f["batch"] = [json.loads(a)["b"] for a in f["axes"]]
    f = f.set_index("batch").sort_index()
    assert f["processes"].tolist() == [3, 3, 3, 3]
    assert f.loc[2, "stability_reason"].startswith("1 of 4 processes set aside: the host canary beside them ran 1.50x")
    assert f.loc[2, "process_medians_s"] == pytest.approx([1.0045e-3] * 3)
    assert f.loc[2, "stability"] == "stable" and (f["stability"] == "stable").all()
    extra = [m for m in caplog.messages if m.find("extra process 1 (slow host): ") >= 0]
    assert len(extra) == 1 and "relu b=2" in extra[0]
    assert sorted(p.name for p in fake_dir.iterdir()) == ["p0", "p1", "p2", "p3"]      # one extra worker, once
    assert not list(r.run_dir.glob("proc-*.jsonl"))


def test_a_run_interrupted_before_an_extra_pass_leaves_that_case_to_the_resume(tmp_path, monkeypatch):
    """Ctrl-C as the extra pass for batch 2 starts: the three other cases are stored, batch 2 stays in
    the journals; the resume measures only its extra process and stores it judged by three processes
    at the host's usual speed, not by the two its base passes kept."""
    from harness.runner import workers as W
    fake_dir = tmp_path / "fake"
    fake_dir.mkdir()
    monkeypatch.setenv("LB_FAKE_DIR", str(fake_dir))
    real = W._pass

    def interrupted_extra(ctx, pending, cases, job, k, path, where, *rest):
        if where.startswith("extra"):
            raise KeyboardInterrupt
        return real(ctx, pending, cases, job, k, path, where, *rest)

    monkeypatch.setattr(W, "_pass", interrupted_extra)
    kw = dict(out=tmp_path / "out", measure_fn=slow_host_in_second_process, progress=False, profile=False,
              processes=3, calibrate="never")
    r = run_suite(parse_suite(SUITE), **kw)
    assert r.interrupted and r.statuses == {"ok": 3}
    f = load_results(r.run_dir)
    assert sorted(json.loads(a)["b"] for a in f["axes"]) == [1, 3, 4]
    monkeypatch.setattr(W, "_pass", real)
    again = run_suite(parse_suite(SUITE), resume=True, **kw)
    assert not again.interrupted and again.statuses == {"ok": 1} and again.run_dir == r.run_dir
    f = load_results(r.run_dir)
    f["batch"] = [json.loads(a)["b"] for a in f["axes"]]
    row = f.set_index("batch").loc[2]
    assert row["processes"] == 3 and row["stability"] == "stable"
    assert row["stability_reason"].startswith("1 of 4 processes set aside")
    assert sorted(p.name for p in fake_dir.iterdir()) == ["p0", "p1", "p2", "p3"]      # the resume ran one worker
    assert not list(r.run_dir.glob("proc-*.jsonl"))


def test_an_extra_process_that_dies_leaves_the_row_to_the_others(tmp_path, monkeypatch):
    """Both extra processes of batch 2 are killed: the row is judged by the base processes kept (2 of
    3 beside the canary), not marked noisy for failures of processes nobody asked for."""
    fake_dir = tmp_path / "fake"
    fake_dir.mkdir()
    monkeypatch.setenv("LB_FAKE_DIR", str(fake_dir))
    monkeypatch.setenv("LB_FAKE_KILL", "1")
    r = run_suite(parse_suite(SUITE), out=tmp_path / "out", measure_fn=slow_host_in_second_process,
                  progress=False, profile=False, processes=3)
    f = load_results(r.run_dir)
    f["batch"] = [json.loads(a)["b"] for a in f["axes"]]
    row = f.set_index("batch").loc[2]
    assert row["processes"] == 2 and row["stability"] == "stable"
    assert row["stability_reason"].startswith("1 of 3 processes set aside") and "failed" not in row["stability_reason"]
    assert sorted(p.name for p in fake_dir.iterdir()) == ["p0", "p1", "p2", "p3", "p4"]    # two extras tried


def test_a_worker_killed_mid_case_costs_that_case_one_process(tmp_path, monkeypatch):
    monkeypatch.setenv("LB_FAKE_KILL", "1")
    r = _run(tmp_path, monkeypatch, processes=2)
    f = load_results(r.run_dir)
    assert r.statuses == {"ok": 4} and len(f) == 4
    killed = f[[json.loads(a)["b"] == 4 for a in f["axes"]]].iloc[0]
    assert killed["processes"] == 1 and killed["stability"] in ("noisy", "contended")
    assert "worker process died (exit code -9)" in killed["stability_reason"] or killed["stability"] == "contended"


def test_omp_wait_runs_in_a_worker_and_is_recorded(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    r = _run(tmp_path, monkeypatch, processes=1, omp_wait="active")
    f = load_results(r.run_dir)
    assert (f["omp_wait_policy"] == "active").all() and (f["processes"] == 1).all()
    here = run_suite(parse_suite(SUITE), out=tmp_path / "here", measure_fn=slow_second_process, progress=False,
                     profile=False)
    g = load_results(here.run_dir)
    assert g["omp_wait_policy"].isna().all()
    assert set(f["settings_id"]) != set(g["settings_id"])          # a different threading setting
    meta = json.loads(next(r.run_dir.glob("run-*.json")).read_text())
    assert meta["repeats"] == {"processes": 1, "omp_wait": "active", "in_workers": True}
    assert ["OMP_WAIT_POLICY", "ACTIVE"] in meta["machine"]["threading"]["env"]


def test_processes_are_validated():
    from harness.errors import SpecError
    for bad in (0, 65, 2.5, True):
        with pytest.raises(SpecError):
            run_suite(parse_suite(SUITE), processes=bad, out="/nonexistent/never-written")
    with pytest.raises(SpecError):
        run_suite(parse_suite(SUITE), omp_wait="sometimes", out="/nonexistent/never-written")


def test_host_busy_is_recorded_per_row_in_process(tmp_path, monkeypatch):
    r = _run(tmp_path, monkeypatch)
    f = load_results(r.run_dir)
    assert (f["processes"] == 1).all() and f["stability"].notna().all()
    # the fake reports 0.2 s of sampling but returns at once: rows too short for the tick count as unknown;
    # a row that took longer on a loaded host (the first, say) has a share: each is null or within [0, 1]
    busy = f["host_busy"]
    assert (busy.isna() | ((busy >= 0) & (busy <= 1))).all()


def recording_fake(fn, *, inputs, **kw):
    """1 ms per call; appends the batch size it measured to LB_FAKE_DIR/measured."""
    with open(os.path.join(os.environ["LB_FAKE_DIR"], "measured"), "a") as fh:
        fh.write(f"{inputs[0][0].shape[0]}\n")
    samples = tuple(1e-3 for _ in range(10))
    return Measurement(device="cpu", timer="fake", mode="hot", samples_s=samples, number=1, warmup_calls=0,
                       warmup_s=0.0, estimate_s=1e-3, sampling_s=0.01, threads=1, gc_paused=True,
                       rotation=len(inputs), stop_reason="converged", target_rel_ci=0.01)


def journal_job(tmp_path, monkeypatch, first: int):
    """A worker job over SUITE's first ``first`` cases, journalled to ``tmp_path/p0.jsonl``, timed by
    ``recording_fake`` (which appends to ``tmp_path/fake/measured``), and a fork server for its workers:
    (job, cases, journal, fake dir, launcher)."""
    from harness.backends import resolve_device
    from harness.runner import workers as W
    from harness.runner.context import make_context
    from harness.runner.launch import ForkServer, omp_env
    fake_dir = tmp_path / "fake"
    fake_dir.mkdir()
    monkeypatch.setenv("LB_FAKE_DIR", str(fake_dir))
    suite = parse_suite(SUITE)
    cases = list(suite.cases())
    journal = tmp_path / "p0.jsonl"
    ctx = make_context(suite, resolve_device("cpu"), ["fp32"], 1, "hot", (1, 1), "r")
    job = W.WorkerJob(ctx=ctx, cases=tuple(cases[:first]), measure_fn=recording_fake, profile=False,
                      journal=str(journal))
    return job, cases, journal, fake_dir, ForkServer(omp_env(None))


def test_an_interrupted_pass_resumes_from_its_journal(tmp_path, monkeypatch):
    """Rows complete in every pass are stored at once; a pass continues where its journal stops."""
    import dataclasses

    from harness.runner import workers as W
    first, cases, journal, fake_dir, start = journal_job(tmp_path, monkeypatch, 2)
    ids = [c.case_id for c in cases]
    seen: list[str] = []
    W.run_pass(first, start, lambda cid, code: None, lambda row: seen.append(row.key.case_id))
    with open(journal, "a") as fh:
        fh.write('{"run_id": "r", "row_id": "torn')                    # a kill mid-line
    W.run_pass(dataclasses.replace(first, cases=tuple(cases)), start, lambda cid, code: None,
               lambda row: seen.append(row.key.case_id))
    start.close()
    measured = (fake_dir / "measured").read_text().split()
    assert measured == ["1", "2", "3", "4"]                            # each case once, in order
    assert seen == ids and set(W.read_journal(journal)[0]) == set(ids)
    assert [cid for cid, _ in W.iter_complete([journal], ids)] == ids


def slow_fake(fn, *, inputs, **kw):
    """0.5 s of wall per case (a worker a test can catch mid-run); appends the batch to LB_FAKE_DIR/measured."""
    import time
    time.sleep(0.5)
    return recording_fake(fn, inputs=inputs, **kw)


PARENT = r"""
import os, sys
sys.path[:0] = sys.argv[2].split(os.pathsep)
from harness.runner import run_suite
from harness.suite import parse_suite
from test_processes import SUITE, slow_fake
s = parse_suite(dict(SUITE, sweep=[dict(SUITE["sweep"][0], axes={"b": list(range(1, 21))})]))
run_suite(s, out=sys.argv[1], measure_fn=slow_fake, processes=2, progress=False, profile=False, calibrate="never")
"""


def test_a_worker_stops_when_its_parent_is_killed(tmp_path, monkeypatch):
    """SIGKILL of the run's process: its worker stops too (never measures beside a resumed run)."""
    import subprocess
    import sys
    import time
    fake_dir = tmp_path / "fake"
    fake_dir.mkdir()
    env = dict(os.environ, LB_FAKE_DIR=str(fake_dir))
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(tmp_path / "out"), os.pathsep.join(sys.path)],
                              env=env)
    measured = fake_dir / "measured"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not measured.exists() or len(measured.read_text().split()) < 2):
        time.sleep(0.1)
    assert measured.exists(), "the worker never measured"
    parent.kill()
    parent.wait()
    time.sleep(1.5)                                    # the worker dies with its parent (PR_SET_PDEATHSIG)
    settled = len(measured.read_text().split())
    time.sleep(2.0)                                    # 4 more cases would have been measured by now
    assert len(measured.read_text().split()) == settled < 20


def test_resume_passes_over_another_machines_run(tmp_path):
    from harness.runner.resume import find_run as _find_run
    for name, machine in [("procs-cpu-20260101T000000Z", "mine"), ("procs-cpu-20260102T000000Z", "other")]:
        d = tmp_path / name
        d.mkdir()
        (d / "run-1of1.json").write_text(json.dumps({"run_id": name, "suite": "procs", "machine_id": machine}))
    (tmp_path / "procs-cpu-x-cpu-20260103T000000Z").mkdir()            # another suite's run: never
    (tmp_path / "procs-cpu-x-cpu-20260103T000000Z" / "run-1of1.json").write_text(
        json.dumps({"run_id": "procs-cpu-x-cpu-20260103T000000Z", "suite": "procs-cpu-x"}))
    assert _find_run(tmp_path, "procs", "cpu", (1, 1), "mine").name == "procs-cpu-20260101T000000Z"
    assert _find_run(tmp_path, "procs", "cpu", (1, 1), "other").name == "procs-cpu-20260102T000000Z"
    assert _find_run(tmp_path, "procs", "cpu", (1, 1), "third") is None


def row_record(case_id: str, median: float) -> dict:
    """A stored row's record (a worker journal's line) of case ``case_id`` with median ``median``."""
    from harness.record import Row
    rec = {"run_id": "r", "row_id": f"m:cpu:{case_id}", "case_id": case_id, "config_id": case_id, "suite": "s",
           "family": "f", "machine_id": "m", "machine_name": "m", "settings_id": "s", "host": "h", "layer": "relu",
           "config": "{}", "axes": "{}", "memory_format": "nchw", "dtype": "fp32", "device": "cpu",
           "device_type": "cpu", "device_name": "cpu", "status": "ok", "peak_source": "none",
           "ceiling_source": "none", "timestamp": "t", "harness_version": "0", "torch_version": "0",
           "python_version": "3", "time_median_s": median, "samples_s": [median]}
    return Row.from_record(rec).to_record()


def test_a_journal_is_read_incrementally_and_a_torn_line_waits_for_its_newline(tmp_path):
    """Three appends, the second ending mid-line: each poll reads only what was appended since the
    last one, each record comes out exactly once, and a poll after no growth consumes nothing."""
    from harness.runner.workers import WorkerJournal
    from harness.store.journal import JournalTail
    path = tmp_path / "proc-1of1-env-p0.jsonl"
    a = json.dumps(row_record("a", 1))
    b = json.dumps(row_record("b", 2))
    first = '{"start": "a"}\n' + a + "\n"
    second = '{"start": "b"}\n' + b[:10]                  # the record of b torn mid-line
    third = b[10:] + '\n{"start": "c"}\n'
    journal = WorkerJournal(path)
    assert journal.update() == [] and journal.tail.offset == 0                 # no file yet
    new: list[dict] = []
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(first)
        fh.flush()
        new += journal.update()
        assert journal.tail.offset == len(first) and journal.tail.last_read == len(first)
        assert journal.update() == [] and journal.tail.last_read == 0 and journal.tail.offset == len(first)
        fh.write(second)
        fh.flush()
        new += journal.update()
        assert journal.tail.offset == len(first) + len('{"start": "b"}\n')     # the torn line is not consumed
        assert journal.started == ["a", "b"] and set(journal.rows) == {"a"}
        assert journal.update() == [] and journal.tail.last_read == 0          # still torn: nothing consumed
        fh.write(third)
        fh.flush()
        new += journal.update()
    size = path.stat().st_size
    assert size == len(first + second + third)
    # the torn line is consumed whole once its newline arrives, with the line after it
    assert journal.tail.offset == size and journal.tail.last_read == len(b) + len('\n{"start": "c"}\n')
    assert [(r.key.case_id, r.timing.time_median_s) for r in new] == [("a", 1), ("b", 2)]   # each row once, in order
    assert journal.started == ["a", "b", "c"] and list(journal.rows) == ["a", "b"]
    assert journal.update() == [] and journal.tail.offset == size and journal.tail.last_read == 0
    # a fresh reader of the whole file sees the same
    from harness.runner.workers import read_journal
    rows, started = read_journal(path)
    assert {c: r.timing.time_median_s for c, r in rows.items()} == {"a": 1, "b": 2} and started == ["a", "b", "c"]
    assert JournalTail(path).read() == [{"start": "a"}, json.loads(a), {"start": "b"}, json.loads(b),
                                                     {"start": "c"}]


def test_a_worker_journal_skips_lines_that_are_not_its_records(tmp_path):
    """Garbage, JSON that is not an object, a record without a case id: skipped, never fatal; a
    second record of a case replaces the first but is not passed on again."""
    from harness.runner.workers import WorkerJournal
    path = tmp_path / "j.jsonl"
    path.write_bytes(b'\x00garbage{{\n42\n[1, 2]\n{"record": 5}\n{"case_id": "x"}\n{"start": "a"}\n'
                     + json.dumps(row_record("a", 1)).encode() + b"\n" + json.dumps(row_record("a", 2)).encode()
                     + b"\n")
    journal = WorkerJournal(path)
    assert [r.timing.time_median_s for r in journal.update()] == [1]
    assert {c: r.timing.time_median_s for c, r in journal.rows.items()} == {"a": 2} and journal.started == ["a"]


def test_cut_torn_line(tmp_path):
    from harness.store.journal import cut_torn_line
    p = tmp_path / "j.jsonl"
    cut_torn_line(p)                                              # missing: nothing to do
    assert not p.exists()
    for content, kept in [(b"", b""), (b'{"a": 1}\n', b'{"a": 1}\n'), (b'{"a": 1}\n{"b": 2', b'{"a": 1}\n'),
                          (b'{"b": 2', b""), (b"x\n" + b"y" * 200_000, b"x\n")]:      # the last: > one block back
        p.write_bytes(content)
        cut_torn_line(p)
        assert p.read_bytes() == kept


def test_append_is_one_durable_line(tmp_path, monkeypatch):
    """``append`` writes one line (NaN as the store always wrote it) and fsyncs before returning."""
    import math

    from harness.store import journal as J
    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(J.os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    p = tmp_path / "j.jsonl"
    with open(p, "a", encoding="utf-8") as fh:
        J.append(fh, {"record": {"case_id": "a", "t": math.nan, "p": Path("x")}})
        assert synced == [fh.fileno()]
    assert p.read_text() == '{"record": {"case_id": "a", "t": NaN, "p": "x"}}\n'


def test_a_pass_reads_each_journal_byte_once(tmp_path, monkeypatch):
    """The parent's polls of a worker journal consume every byte exactly once over a whole pass
    (workers started again after a torn line included), never the whole file per poll."""
    import dataclasses

    from harness.runner import workers as W
    from harness.store import journal as J
    job, cases, path, _, start = journal_job(tmp_path, monkeypatch, 1)
    ids = [c.case_id for c in cases]
    W.run_pass(job, start, lambda cid, code: None, lambda row: None)
    with open(path, "a") as fh:
        fh.write('{"run_id": "r", "row_id": "torn')                    # a kill mid-line
    consumed: list[int] = []
    real = J.JournalTail.read

    def spy(self):
        out = real(self)
        consumed.append(self.last_read)
        return out
    monkeypatch.setattr(J.JournalTail, "read", spy)
    seen: list[str] = []
    W.run_pass(dataclasses.replace(job, cases=tuple(cases)), start, lambda cid, code: None,
               lambda row: seen.append(row.key.case_id))
    start.close()
    assert seen == ids[1:]
    assert sum(consumed) == path.stat().st_size                        # each byte once (the torn line was cut)
    assert len(consumed) >= 3 and 0 in consumed                        # several polls; the idle ones read nothing


def test_blocks_double_up_to_their_bound():
    from harness.runner.workers import blocks
    assert [len(b) for b in blocks(range(300), first=64, most=128)] == [64, 128, 108]
    assert [len(b) for b in blocks(iter(range(5)), first=2, most=8)] == [2, 3]
    assert [len(b) for b in blocks(range(72))] == [72]                 # a rest under 64 joins the block
    assert [len(b) for b in blocks(range(128))] == [64, 64]
    assert list(blocks([], first=4)) == []


def stored_so_far(fn, *, inputs, **kw):
    """1 ms per call; appends to LB_FAKE_DIR/seen the number of rows the run had stored when called."""
    stored = sum(len(p.read_bytes().splitlines()) for p in Path(os.environ["LB_FAKE_DIR"]).parent.glob(
        "out/*/rows-1of1.jsonl"))
    with open(os.path.join(os.environ["LB_FAKE_DIR"], "seen"), "a") as fh:
        fh.write(f"{inputs[0][0].shape[0]} {stored}\n")
    samples = tuple(1e-3 * (1 + 0.001 * k) for k in range(10))
    return Measurement(device="cpu", timer="fake", mode="hot", samples_s=samples, number=1, warmup_calls=0,
                       warmup_s=0.0, estimate_s=1e-3, sampling_s=0.01, threads=1, gc_paused=True,
                       rotation=len(inputs), stop_reason="converged", target_rel_ci=0.01)


def test_cases_go_through_the_processes_in_blocks_each_stored_before_the_next(tmp_path, monkeypatch):
    from harness.runner import workers
    monkeypatch.setattr(workers, "FIRST_BLOCK", 4)
    monkeypatch.setattr(workers, "MAX_BLOCK", 8)
    suite = dict(SUITE, sweep=[dict(SUITE["sweep"][0], axes={"b": list(range(1, 11))})])
    fake_dir = tmp_path / "fake"
    fake_dir.mkdir()
    monkeypatch.setenv("LB_FAKE_DIR", str(fake_dir))
    r = run_suite(parse_suite(suite), out=tmp_path / "out", measure_fn=stored_so_far, progress=False, profile=False,
                  processes=2)
    assert r.statuses == {"ok": 10}
    f = load_results(r.run_dir)
    assert (f["processes"] == 2).all() and f["process_medians_s"].map(len).eq(2).all()
    seen = [tuple(map(int, line.split())) for line in (fake_dir / "seen").read_text().splitlines()]
    # blocks of 4 then 6 cases, each measured by both processes: batches 1-4 twice with nothing stored,
    # then 5-10 twice with the first block's 4 rows already stored
    assert len(seen) == 20
    assert sorted(b for b, n in seen if n == 0) == sorted([1, 2, 3, 4] * 2)
    assert sorted(b for b, n in seen if n == 4) == sorted(list(range(5, 11)) * 2)
    assert not list(r.run_dir.glob("proc-*.jsonl"))


def interrupting_fake(fn, *, inputs, **kw):
    """1 ms per call, appending ``dtype batch`` to LB_FAKE_DIR/measured; the first worker to reach
    batch 11 sends SIGINT to the run's process (LB_RUN_PID; once)."""
    x = inputs[0][0]
    if x.shape[0] == 11:
        try:
            os.close(os.open(os.path.join(os.environ["LB_FAKE_DIR"], "interrupted"), os.O_CREAT | os.O_EXCL))
            os.kill(int(os.environ["LB_RUN_PID"]), signal.SIGINT)
        except FileExistsError:
            pass
    with open(os.path.join(os.environ["LB_FAKE_DIR"], "measured"), "a") as fh:
        fh.write(f"{str(x.dtype).removeprefix('torch.')} {x.shape[0]}\n")
    samples = tuple(1e-3 for _ in range(10))
    return Measurement(device="cpu", timer="fake", mode="hot", samples_s=samples, number=1, warmup_calls=0,
                       warmup_s=0.0, estimate_s=1e-3, sampling_s=0.01, threads=1, gc_paused=True,
                       rotation=len(inputs), stop_reason="converged", target_rel_ci=0.01)


RESUMING_PARENT = r"""
import os, signal, sys
sys.path[:0] = sys.argv[2].split(os.pathsep)
signal.signal(signal.SIGINT, signal.default_int_handler)
from harness.runner import run_suite, workers
from harness.suite import parse_suite
from test_processes import SUITE, interrupting_fake
workers.FIRST_BLOCK, workers.MAX_BLOCK = 4, 8
os.environ["LB_RUN_PID"] = str(os.getpid())
s = parse_suite(dict(SUITE, sweep=[dict(SUITE["sweep"][0], axes={"b": list(range(1, 15))})]))
for resume, dtypes in ((False, ["fp32"]), (True, sys.argv[3].split(","))):
    r = run_suite(s, out=sys.argv[1], measure_fn=interrupting_fake, processes=2, progress=False, profile=False,
                  calibrate="never", resume=resume, dtypes=dtypes)
    print(r.interrupted, sum(r.statuses.values()), flush=True)
"""


@pytest.mark.parametrize("resume_dtypes", ["fp32", "bf16,fp32"])
def test_a_resumed_run_uses_every_record_its_journals_hold(tmp_path, resume_dtypes):
    """Blocks of 4 then 10 cases (a rest under 4 joins the block before it); SIGINT while the first
    pass of the second block (batches 5-14) measures batch 11: block 1 is stored. The resume, in
    blocks of 4 again and with bf16 cases first when asked, uses every record the journals hold
    (each block keeps the others' records), so batches 5-10, journaled by that pass, are measured
    by it once in all."""
    import subprocess
    import sys
    fake_dir = tmp_path / "fake"
    fake_dir.mkdir()
    env = dict(os.environ, LB_FAKE_DIR=str(fake_dir))
    p = subprocess.run([sys.executable, "-c", RESUMING_PARENT, str(tmp_path / "out"), os.pathsep.join(sys.path),
                        resume_dtypes], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    new = 10 + (14 if "bf16" in resume_dtypes else 0)
    assert p.stdout.split() == ["True", "4", "False", str(new)]        # 4 rows, then the others
    measured = [tuple(line.split()) for line in (fake_dir / "measured").read_text().splitlines()]
    counts = {b: measured.count(("float32", str(b))) for b in range(1, 15)}
    assert all(counts[b] == 2 for b in (*range(1, 11), 12, 13, 14)), counts    # once per pass
    assert counts[11] in (2, 3)                 # measured again if the interrupt beat its record
    f = load_results(next((tmp_path / "out").iterdir()))
    assert len(f) == 4 + new and f["row_id"].is_unique and (f["processes"] == 2).all()
    assert not list((tmp_path / "out").glob("*/proc-*"))


def failing_in_first_process(fn, *, inputs, **kw):
    """1 ms per call; batch 2 fails in the first process."""
    if _process_index() == 0 and inputs[0][0].shape[0] == 2:
        raise RuntimeError("boom")
    return slow_second_process(fn, inputs=inputs, **kw)


def test_a_case_the_first_process_did_not_measure_is_profiled_by_a_later_one(tmp_path, monkeypatch):
    fake_dir = tmp_path / "fake"
    fake_dir.mkdir()
    monkeypatch.setenv("LB_FAKE_DIR", str(fake_dir))
    r = run_suite(parse_suite(SUITE), out=tmp_path / "out", measure_fn=failing_in_first_process, progress=False,
                  profile=True, processes=3)
    f = load_results(r.run_dir)
    f["batch"] = [json.loads(a)["b"] for a in f["axes"]]
    row = f.set_index("batch").loc[2]
    assert row["stability_reason"].startswith("1 of 3 processes failed (RuntimeError: boom)")
    assert row["kernels"] == "aten::clamp_min" and (f["kernels"] == "aten::clamp_min").all()


def test_only_the_first_process_profiles_and_every_row_keeps_what_ran(tmp_path, monkeypatch):
    """What ran is profiled once a case (the first pass), not in every process; the merged row keeps
    it whichever process holds its median."""
    from harness.runner import workers as W
    profiled: list[bool] = []
    real = W.run_pass

    def spy(job, *args):
        profiled.append(job.profile)
        return real(job, *args)

    monkeypatch.setattr(W, "run_pass", spy)
    fake_dir = tmp_path / "fake"
    fake_dir.mkdir()
    monkeypatch.setenv("LB_FAKE_DIR", str(fake_dir))
    r = run_suite(parse_suite(SUITE), out=tmp_path / "out", measure_fn=slow_second_process, progress=False,
                  profile=True, processes=3)
    assert profiled == [True, False, False]
    f = load_results(r.run_dir)
    assert len(f) == 4 and (f["kernels"] == "aten::clamp_min").all() and (f["kernel_launches"] >= 1).all()
