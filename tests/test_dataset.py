"""The result dataset: shards published atomically into hive partitions at a local path, memory:// and
s3:// (a real moto S3 server through s3fs); read back validated (a bad file refused by name, the
others load); pandas and DuckDB read the folder without layerbench; ``layerbench query``; a run with
a URL ``--out`` stages locally and publishes."""

import time
from pathlib import Path

import duckdb
import fsspec
import pandas as pd
import pytest

from harness.cli import main
from harness.runner import run_suite
from harness.store.dataset import Shard, is_url, load_any, load_dataset, publish, shard_files
from harness.suite import parse_suite
from harness.timing import Measurement

SUITE = {"name": "tiny", "budget_s": 0.1,
         "sweep": [{"family": "relu", "layer": "relu", "input": "{b}x8", "axes": {"b": [1, 2, 4]}}]}


def fake_measure(fn, *, inputs, **kw):
    fn(*inputs[0])
    return Measurement(device="cpu", timer="fake", mode="hot", samples_s=(1e-3,) * 10, number=1, warmup_calls=0,
                       warmup_s=0.0, estimate_s=1e-3, sampling_s=0.01, threads=1, gc_paused=True,
                       rotation=len(inputs), stop_reason="converged", target_rel_ci=0.01)


@pytest.fixture(scope="module")
def part(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    r = run_suite(parse_suite(SUITE, "tiny.toml"), out=out, measure_fn=fake_measure, progress=False,
                  profile=False, run_id="tiny-cpu-20261124T010203Z")
    return r


def test_publish_local_is_hive_partitioned_and_replaces_on_republish(part, tmp_path):
    root = tmp_path / "ds"
    target = publish(part.parquet, str(root))
    shard = Shard.of(part.parquet)
    assert shard.run_id == "tiny-cpu-20261124T010203Z" and shard.shard == "1of1" and len(shard.date) == 10
    expected = root / f"bench=tiny/machine={part.machine_id}/date={shard.date}/tiny-cpu-20261124T010203Z--1of1.parquet"
    assert Path(target) == expected and expected.exists()
    publish(part.parquet, str(root))                         # a retried task publishes again: same name
    assert shard_files(str(root)) == [str(expected)]
    assert not [p for p in root.rglob("*") if p.name.startswith(".")]     # no temporary left behind
    loaded = load_dataset(str(root))
    assert len(loaded.frame) == 3 and loaded.refused == []
    assert sorted(loaded.frame["input_shapes"]) == ["1x8", "2x8", "4x8"]


def test_other_readers_need_no_layerbench(part, tmp_path):
    root = tmp_path / "ds"
    publish(part.parquet, str(root))
    df = pd.read_parquet(root)                                 # pyarrow dataset with hive partitioning
    assert len(df) == 3 and set(df["bench"].astype(str)) == {"tiny"} and set(df["suite"]) == {"tiny"}
    sql = (f"SELECT bench, machine, count(*) AS n, min(time_median_s) AS t FROM "
           f"read_parquet('{root}/**/*.parquet', hive_partitioning=true) GROUP BY ALL")
    ((bench, machine, n, t),) = duckdb.sql(sql).fetchall()
    assert (bench, machine, n, t) == ("tiny", part.machine_id, 3, 1e-3)


def test_bad_file_is_refused_by_name_and_others_load(part, tmp_path):
    url = "memory://lbtest/ds"
    publish(part.parquet, url)
    fs = fsspec.filesystem("memory")
    fs.pipe_file("/lbtest/ds/bench=tiny/machine=x/date=2026-01-01/junk--1of1.parquet", b"not parquet")
    loaded = load_dataset(url)
    assert len(loaded.frame) == 3
    assert len(loaded.refused) == 1 and loaded.refused[0].startswith(
        "memory://lbtest/ds/bench=tiny/machine=x/date=2026-01-01/junk--1of1.parquet: not a readable Parquet file")
    assert is_url(url) and not is_url("results")
    both = load_any([url, str(part.run_dir)])                 # a URL and a run directory: deduplicated
    assert len(both.frame) == 3
    fs.rm("/lbtest", recursive=True)


@pytest.fixture(scope="module")
def s3_server():
    pytest.importorskip("s3fs")
    from moto.server import ThreadedMotoServer
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def test_s3_dataset_against_a_moto_server(part, s3_server, monkeypatch):
    import boto3
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)       # boto3 and s3fs (aiobotocore) both read it
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket="nightly")
    fsspec.config.conf["s3"] = {"client_kwargs": {"endpoint_url": s3_server}}
    try:
        url = publish(part.parquet, "s3://nightly/layerbench")
        assert url.startswith("s3://nightly/layerbench/bench=tiny/machine=") and url.endswith("--1of1.parquet")
        keys = [o["Key"] for o in boto3.client("s3", endpoint_url=s3_server).list_objects_v2(
            Bucket="nightly")["Contents"]]
        assert keys == [url.removeprefix("s3://nightly/")]       # one object: a single PUT, no temporary
        loaded = load_dataset("s3://nightly/layerbench")
        assert len(loaded.frame) == 3 and loaded.refused == []
    finally:
        fsspec.config.conf.pop("s3", None)


def test_query_cli(part, tmp_path, capsys):
    root = tmp_path / "ds"
    publish(part.parquet, str(root))
    sql = "SELECT input_shapes, round(achieved_flops_s) AS f FROM derived ORDER BY input_shapes"
    assert main(["query", sql, "--dataset", f"file://{root}", "--format", "csv"]) == 0
    # relu on b x 8 elements: 1 FLOP per element in 1 ms -> 8000 b FLOP/s
    assert capsys.readouterr().out.splitlines() == ["input_shapes,f", "1x8,8000.0", "2x8,16000.0", "4x8,32000.0"]
    assert main(["query", "SELECT nope FROM rows", "--dataset", str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("layerbench query: error:") and "nope" in err and len(err.splitlines()) == 1


def test_query_without_duckdb_says_so(part, tmp_path, capsys, monkeypatch):
    import builtins
    real = builtins.__import__

    def no_duckdb(name, *a, **kw):
        if name == "duckdb":
            raise ImportError("no duckdb")
        return real(name, *a, **kw)
    monkeypatch.setattr(builtins, "__import__", no_duckdb)
    assert main(["query", "SELECT 1", "--dataset", str(part.run_dir)]) == 2
    assert "DuckDB is not installed: pip install 'layerbench[fleet]'" in capsys.readouterr().err


def test_run_with_url_out_stages_and_publishes(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LAYERBENCH_CACHE", str(tmp_path / "cache"))
    suite = tmp_path / "tiny.toml"
    suite.write_text('name = "tiny"\nbudget_s = 0.01\nmin_reps = 1\nwarmup_s = 0\n[[sweep]]\nfamily = "relu"\n'
                     'layer = "relu"\ninput = "{b}x8"\naxes = { b = [1, 2] }\n')
    started = time.time()
    url = f"file://{tmp_path / 'ds'}"
    assert main(["run", str(suite), "--out", url, "--calibrate", "never", "--quiet", "--no-report"]) == 0
    out = capsys.readouterr().out
    assert "-> file://" in out and "--1of1.parquet" in out
    frame = load_dataset(url).frame
    assert sorted(frame["input_shapes"]) == ["1x8", "2x8"]
    staged = list((tmp_path / "cache" / "staging").rglob("part-1of1.parquet"))
    assert len(staged) == 1                                   # the staged run stays for --resume
    assert time.time() - started < 120
