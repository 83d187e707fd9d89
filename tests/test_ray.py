"""A suite fanned out over a real local Ray cluster (CPU only): the stored case ids equal a serial run's,
a worker killed mid-task (SIGKILL of its pid) is retried and resumes from its journal without losing
or duplicating a row; the task plan (resources per device type) without Ray."""

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from harness.fleet import FleetError, Node, plan
from harness.fleet.plan import parse_devices
from harness.runner import run_suite
from harness.store import load_results
from harness.store.dataset import load_dataset
from harness.suite import parse_suite
from harness.timing import Measurement

SUITE = {
    "name": "tiny", "budget_s": 0.1,
    "sweep": [{"family": "relu", "layer": "relu", "input": "{b}x{c}", "axes": {"b": [1, 2, 4], "c": [8, 16]}},
              {"family": "lin", "layer": "linear", "input": "2x{in}", "params": {"out": 4}, "axes": {"in": [4, 8]}}],
}


class SlowMeasure:
    """A fake timer (0.25 s per case) that appends each call's process id to ``calls`` when given."""

    def __init__(self, calls=None):
        self.calls = calls

    def __call__(self, fn, *, inputs, **kw):
        if self.calls:
            with open(self.calls, "a") as f:
                f.write(f"{os.getpid()} {tuple(inputs[0][0].shape)}\n")
        fn(*inputs[0])
        time.sleep(0.25)
        return _measurement(inputs)


slow_measure = SlowMeasure()


def _measurement(inputs):
    return Measurement(device="cpu", timer="fake", mode="hot", samples_s=(1e-3,) * 10, number=1, warmup_calls=0,
                       warmup_s=0.0, estimate_s=1e-3, sampling_s=0.01, threads=1, gc_paused=True,
                       rotation=len(inputs), stop_reason="converged", target_rel_ci=0.01)


def test_plan_places_shards_by_device_type():
    nodes = [Node(cpus=16, gpus=8, resources={"H100": 8}), Node(cpus=8, gpus=4, resources={"A100": 4}),
             Node(cpus=4)]
    p = plan(nodes, "cuda", ["H100", "A100"])
    assert [(x.label, x.shard) for x in p][:2] == [("H100", (1, 8)), ("H100", (2, 8))]
    assert len([x for x in p if x.label == "H100"]) == 8 and len([x for x in p if x.label == "A100"]) == 4
    assert p[0].options == {"resources": {"H100": 1}, "num_gpus": 1, "num_cpus": 1}
    assert [x.shard for x in plan(nodes, "cuda")] == [(k, 12) for k in range(1, 13)]     # 8 + 4 GPUs
    cpu = plan(nodes, "cpu")
    assert len(cpu) == 3 and cpu[0].options == {"num_cpus": 4}          # a whole (smallest) node per task
    with pytest.raises(FleetError, match="--devices L4: no node .* ray start --resources"):
        plan(nodes, "cuda", ["L4"])
    with pytest.raises(FleetError, match="no GPU"):
        plan([Node(cpus=4)], "cuda")
    assert parse_devices("H100, A100") == ["H100", "A100"]
    with pytest.raises(ValueError, match="--devices"):
        parse_devices("H100,H100")


def test_a_local_cluster_keeps_its_files_out_of_the_virtualenv(tmp_path):
    """Ray's agents refuse a temp dir inside $VIRTUAL_ENV and ray.init then hangs (nox's TMPDIR):
    layerbench moves the cluster to /tmp, or refuses an explicit RAY_TMPDIR there in one line."""
    from harness.fleet.ray_suite import local_temp_dir
    venv = tmp_path / "venv"
    (venv / "tmp").mkdir(parents=True)
    assert local_temp_dir({"VIRTUAL_ENV": str(venv), "TMPDIR": str(venv / "tmp")}) == "/tmp"
    assert local_temp_dir({"VIRTUAL_ENV": str(venv), "TMPDIR": str(tmp_path)}) is None
    assert local_temp_dir({"TMPDIR": str(venv / "tmp")}) is None                      # no virtualenv
    assert local_temp_dir({"VIRTUAL_ENV": str(venv)}) is None                         # Ray's /tmp
    assert local_temp_dir({"VIRTUAL_ENV": str(venv), "TMPDIR": str(venv / "tmp"), "RAY_TMPDIR": "/tmp"}) is None
    with pytest.raises(FleetError, match=f"RAY_TMPDIR={venv / 'tmp'} lies inside the virtualenv {venv}"):
        local_temp_dir({"VIRTUAL_ENV": str(venv), "RAY_TMPDIR": str(venv / "tmp")})


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    ray = pytest.importorskip("ray")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cache = os.environ.get("LAYERBENCH_CACHE")
    os.environ["LAYERBENCH_CACHE"] = str(tmp_path_factory.mktemp("cache"))     # workers stage under it
    started = time.time()
    from harness.fleet.ray_suite import start_local
    start_local(ray, num_cpus=2)                   # under nox TMPDIR lies in the venv, where plain ray.init hangs
    print(f"ray.init: {time.time() - started:.1f} s")
    yield ray
    ray.shutdown()
    if cache is None:
        os.environ.pop("LAYERBENCH_CACHE")
    else:
        os.environ["LAYERBENCH_CACHE"] = cache


def _serial_ids(tmp_path, suite):
    r = run_suite(suite, out=tmp_path / "serial", measure_fn=slow_measure, progress=False, profile=False)
    return sorted(load_results(r.run_dir)["case_id"])


def test_ray_run_matches_serial_and_survives_a_killed_worker(ray_cluster, tmp_path):
    from harness.fleet import run_on_ray
    suite = parse_suite(SUITE, "tiny.toml")
    serial = _serial_ids(tmp_path, suite)
    calls = tmp_path / "calls.txt"
    stage = tmp_path / "stage"
    killed: list[int] = []

    def killer():
        # wait until the task has stored 3 rows in its journal, then SIGKILL the worker measuring it
        deadline = time.time() + 60
        while time.time() < deadline:
            journals = list(stage.rglob("rows-*.jsonl"))
            if journals and len(journals[0].read_text().splitlines()) >= 3 and calls.exists():
                pid = int(calls.read_text().split()[0])
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.05)

    t = threading.Thread(target=killer)
    t.start()
    started = time.time()
    summary = run_on_ray(suite, f"file://{tmp_path / 'ds'}", measure_fn=SlowMeasure(str(calls)), stage=str(stage),
                         calibrate="never", profile=False, progress=False)
    t.join()
    print(f"ray run with a killed worker: {time.time() - started:.1f} s")
    assert killed, "the worker was never killed"
    (res,) = summary.results
    assert res.shard == (1, 1) and res.already_done >= 3        # the retry resumed: staged rows not measured again
    loaded = load_dataset(f"file://{tmp_path / 'ds'}")
    assert loaded.refused == []
    assert sorted(loaded.frame["case_id"]) == serial            # nothing lost, nothing twice
    assert loaded.frame["row_id"].is_unique
    pids = [line.split()[0] for line in calls.read_text().splitlines()]
    assert len(set(pids)) == 2 and pids[0] == str(killed[0])      # two attempts: killed one, then the retry
    # the retry measured only what the killed attempt had not stored (at most one row measured twice)
    assert len(pids) <= len(serial) + 1
    assert summary.counted == len(serial)                       # the retry never counts the shard twice
    files = list(Path(tmp_path / "ds").rglob("*.parquet"))
    assert len(files) == 1 and "bench=tiny/machine=" in files[0].as_posix() and files[0].name.endswith("--1of1.parquet")


def test_ray_two_shards_on_two_cpu_slots(ray_cluster, tmp_path):
    from harness.fleet import run_on_ray
    suite = parse_suite(SUITE, "tiny.toml")
    serial = _serial_ids(tmp_path, suite)
    summary = run_on_ray(suite, str(tmp_path / "ds"), measure_fn=slow_measure, stage=str(tmp_path / "stage"),
                         calibrate="never", profile=False, progress=False, shards=2)
    assert [r.shard for r in summary.results] == [(1, 2), (2, 2)]
    frame = load_dataset(str(tmp_path / "ds")).frame
    assert sorted(frame["case_id"]) == serial and frame["run_id"].nunique() == 1
    assert summary.counted == len(serial) == 8


REAL = {"name": "tiny", "budget_s": 0.01, "min_reps": 1, "warmup_s": 0,
        "sweep": [{"family": "relu", "layer": "relu", "input": "{b}x8", "axes": {"b": [1, 2, 3]}}]}


def test_ray_tally_counts_cases_not_process_records(ray_cluster, tmp_path):
    """With two worker processes per case the runner logs two records of each case; the cluster's
    progress counts each case once: the tally ends at the number of cases (rows stored)."""
    from harness.fleet import run_on_ray
    suite = parse_suite(REAL, "tiny.toml")
    summary = run_on_ray(suite, str(tmp_path / "ds"), stage=str(tmp_path / "stage"), calibrate="never",
                         profile=False, progress=False, processes=2)
    frame = load_dataset(str(tmp_path / "ds")).frame
    assert len(frame) == 3 and (frame["processes"] == 2).all()
    assert summary.counted == 3 and summary.results[0].statuses == {"ok": 3}


def quick_measure(fn, *, inputs, **kw):
    """A fake timer a worker process imports by name (module-level): 1 ms, at once."""
    fn(*inputs[0])
    return _measurement(inputs)


class _FakeTally:
    """The tally actor's interface without Ray: ``report.remote(key, n)`` appends to ``reports``."""

    def __init__(self):
        self.reports = []
        self.report = self

    def remote(self, key, n):
        self.reports.append((key, n))


def test_run_shard_reports_cases_once_each_with_processes(tmp_path):
    """run_shard's reports to the tally, without Ray: with processes=2 (two records per case) one
    report per case, counting 1, 2, ..., then the rows the shard holds; never a count above them."""
    from harness.fleet import ShardTask, run_shard
    suite = parse_suite(SUITE, "tiny.toml")
    cases = suite.count()
    for processes in (2, 1):
        tally = _FakeTally()
        task = ShardTask(suite=suite, dataset=str(tmp_path / f"ds{processes}"), run_id=f"tiny-cpu-p{processes}",
                         shard=(1, 1), calibrate="never", stage=str(tmp_path / f"stage{processes}"), profile=False,
                         processes=processes)
        r = run_shard(task, quick_measure, tally)
        assert r.statuses == {"ok": cases} and cases == 8
        key = f"tiny-cpu-p{processes}--1of1"
        assert tally.reports == [(key, k) for k in range(1, cases + 1)] + [(key, cases)]


def test_cli_run_ray_real_timer(ray_cluster, tmp_path, capsys):
    from harness.cli import main
    suite = tmp_path / "tiny.toml"
    suite.write_text('name = "tiny"\nbudget_s = 0.01\nmin_reps = 1\nwarmup_s = 0\n[[sweep]]\nfamily = "relu"\n'
                     'layer = "relu"\ninput = "{b}x8"\naxes = { b = [1, 2] }\n')
    assert main(["run", str(suite), "--ray", "--out", str(tmp_path / "ds"), "--calibrate", "never", "--quiet",
                 "--no-report"]) == 0
    out = capsys.readouterr().out
    assert "shard 1/1 on" in out and "2 ok" in out and "1 task(s)" in out
    frame = load_dataset(str(tmp_path / "ds")).frame
    assert sorted(frame["input_shapes"]) == ["1x8", "2x8"] and (frame["time_median_s"] > 0).all()


def test_ray_missing_or_misused_is_one_line(tmp_path, capsys, monkeypatch):
    import builtins

    from harness.cli import main
    real = builtins.__import__

    def no_ray(name, *a, **kw):
        if name == "ray":
            raise ImportError("no ray")
        return real(name, *a, **kw)
    monkeypatch.setattr(builtins, "__import__", no_ray)
    assert main(["run", "quick", "--ray", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "layerbench run: error: --ray needs Ray: pip install 'layerbench[fleet]'"
    assert main(["run", "quick", "--devices", "H100", "--out", str(tmp_path)]) == 2
    assert "--devices" in capsys.readouterr().err
