"""The record: every column declared once with unit and meaning, the Arrow schema and its version,
the round trip through the store, the upgrade of version-1 files (the runs committed under
results/ still load), and files that do not match refused with one line naming file and column."""

import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from harness import record as R
from harness.analysis.metrics import DERIVED
from harness.runner import run_suite
from harness.store import load_runs, read_metadata
from harness.suite import load_suite, parse_suite

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "results" / "reference" / "2026-11-24-amd-epyc-zen3-2cpu"


def test_columns_declared_once_with_unit_and_meaning():
    assert len(R.COLUMN_NAMES) == len(set(R.COLUMN_NAMES)) == len(R.SCHEMA)
    for c in R.COLUMNS:
        assert c.unit and len(c.doc) > 5, c.name
    assert R.SCHEMA.metadata[R.VERSION_KEY] == str(R.SCHEMA_VERSION).encode()
    assert not R.SCHEMA.field("run_id").nullable and R.SCHEMA.field("flops").nullable
    assert R.SCHEMA.field("samples_s").type == pa.list_(pa.float64()) and R.SCHEMA.field("flops").type == pa.int64()
    # every column-name constant names a column (analysis and report import these, never literals)
    constants = {k: v for k, v in vars(R).items() if k.isupper() and isinstance(v, str) and k not in
                 ("VERSION_KEY", "META_KEY")}
    assert constants and all(v in R.COLUMN_NAMES for v in constants.values()), constants
    assert set(R.IDENTITY) <= set(R.COLUMN_NAMES) and set(R.MACHINE_KEYS) <= set(R.COLUMN_NAMES)


def test_docs_document_every_column():
    """docs/columns.md (linked from the README) holds the stored columns exactly as
    ``harness.record.columns_markdown()`` writes them and the derived ones exactly as ``DERIVED`` declares them."""
    page = (ROOT / "docs" / "columns.md").read_text()
    assert "(docs/columns.md)" in (ROOT / "README.md").read_text(), "the README does not link docs/columns.md"
    assert R.columns_markdown() in page, "docs/columns.md's column table differs from harness.record.columns_markdown()"
    derived = "\n".join(["| column | unit | meaning |", "|---|---|---|",
                         *(f"| `{d.name}` | {d.unit} | {d.doc} |" for d in DERIVED)])
    assert derived in page, "docs/columns.md's derived table differs from harness.analysis.metrics.DERIVED"
    for name in [*R.COLUMN_NAMES, *(d.name for d in DERIVED)]:
        assert re.search(rf"\| `{name}` \|", page), f"docs/columns.md does not document column {name}"
    assert f"now **{R.SCHEMA_VERSION}**" in page, "docs/columns.md states another schema version"


def fake(median=1e-3):
    from test_runner import fake_measure
    return fake_measure(median)


def test_round_trip(tmp_path):
    s = parse_suite({"name": "rt", "sweep": [{"layer": "relu", "input": "{b}x8", "axes": {"b": [1, 2]}},
                                             {"layer": "conv2d", "input": "1x4x3x3", "params": {"in": 4, "out": 4,
                                                                                              "k": 5}}]})
    r = run_suite(s, out=tmp_path, measure_fn=fake(), progress=False)
    table = pq.read_table(r.parquet)
    assert table.schema.equals(R.SCHEMA, check_metadata=False)
    assert table.schema.metadata[R.VERSION_KEY] == b"6" and read_metadata(r.parquet).schema_version == 6
    loaded = load_runs(r.run_dir)
    assert not loaded.refused and len(loaded.frame) == 3
    again = pq.read_table(r.parquet).to_pylist()
    assert [x["row_id"] for x in again] == list(loaded.frame["row_id"])
    skipped = loaded.frame[loaded.frame.status == "skipped"].iloc[0]          # a 5x5 kernel on a 3x3 input
    assert "kernel_size" in skipped["error"] and skipped["flops"] != skipped["flops"]      # null counts
    assert json.loads(skipped["config"])["kernel_size"] == 5                   # as written, canonical name
    ok = loaded.frame[loaded.frame.status == "ok"]
    assert (ok["peak_source"] == "formula").all() and (ok["ceiling_source"] == "none").all()
    assert list(loaded.runs) == [r.run_id] and loaded.runs[r.run_id].machine_id == r.machine_id


def test_committed_version_1_runs_upgrade():
    loaded = load_runs(str(REFERENCE / "quick-cpu-*"))
    f = loaded.frame
    assert not loaded.refused and len(f) == 80 and f["run_id"].nunique() == 4
    assert (f["peak_source"] == "not stored").all() and (f["ceiling_source"] == "not stored").all()
    assert f["machine_id"].str.startswith("v1").all() and f["machine_name"].str.contains("schema v1").all()
    assert (f["row_id"] == f["machine_id"] + ":cpu:" + f["case_id"]).all()
    # canonical identity: the upgraded ids equal today's ids for the same cases of the quick suite
    today = {c.case_id for c in load_suite("quick").cases() if c.pass_ == "forward"}
    assert set(f["case_id"]) == today                # its backward cases are new; its forward ones continue
    conv = f[f["family"] == "groups-equal-flops"].iloc[-1]
    assert json.loads(conv["config"])["groups"] == 64 and json.loads(conv["axes"])["g"] == 64


def _write(path, table, version=str(R.SCHEMA_VERSION).encode()):
    pq.write_table(table.replace_schema_metadata({R.VERSION_KEY: version}), path)


def test_non_matching_files_are_refused_naming_file_and_column(tmp_path):
    s = parse_suite({"name": "rt", "sweep": [{"layer": "relu", "input": "{b}x8", "axes": {"b": [1, 2]}}]})
    good = run_suite(s, out=tmp_path / "good", measure_fn=fake(), progress=False)
    table = pq.read_table(good.parquet)
    bad = tmp_path / "bad"
    bad.mkdir()
    i = table.schema.get_field_index("flops")
    _write(bad / "part-wrongtype.parquet", table.set_column(i, "flops", pa.array(["many", "more"])))
    _write(bad / "part-missing.parquet", table.drop_columns(["rel_iqr"]))
    _write(bad / "part-extra.parquet", table.append_column("mystery", pa.array([1, 2])))
    _write(bad / "part-newer.parquet", table, b"99")
    _write(bad / "part-nullkey.parquet", table.set_column(table.schema.get_field_index("run_id"), "run_id",
                                                          pa.array([None, "x"], pa.string())))
    (bad / "part-torn.parquet").write_bytes(good.parquet.read_bytes()[:300])
    loaded = load_runs([good.run_dir, bad])
    assert len(loaded.frame) == 2                                              # the good run still loads
    text = "\n".join(loaded.refused)
    assert len(loaded.refused) == 6
    assert re.search(r"part-wrongtype.parquet: column flops: string, expected int64", text)
    assert re.search(r"part-missing.parquet: column rel_iqr: missing", text)
    assert re.search(r"part-extra.parquet: column mystery: not in the result schema", text)
    assert re.search(r"part-newer.parquet: schema version 99 is newer", text)
    assert re.search(r"part-nullkey.parquet: column run_id: null values", text)
    assert re.search(r"part-torn.parquet: not a readable Parquet file", text)
    for line in loaded.refused:
        assert "\n" not in line and len(line) < 400


def test_version_2_files_upgrade_and_are_checked_against_their_own_columns(tmp_path):
    s = parse_suite({"name": "v2", "sweep": [{"layer": "relu", "input": "{b}x8", "axes": {"b": [1, 2]}}]})
    good = run_suite(s, out=tmp_path / "good", measure_fn=fake(), progress=False)
    table = pq.read_table(good.parquet)
    v2 = table.select(list(R.names_in_version(2)))
    d = tmp_path / "v2"
    d.mkdir()
    _write(d / "part-v2.parquet", v2, b"2")
    _write(d / "part-v2-with-v3-column.parquet", v2.append_column("host_busy", pa.array([0.0, 0.0])), b"2")
    loaded = load_runs([d])
    assert len(loaded.refused) == 1 and "part-v2-with-v3-column.parquet: column host_busy: not in" in loaded.refused[0]
    f = loaded.frame
    assert len(f) == 2 and (f["processes"] == 1).all() and (f["process_spread"] == 0.0).all()
    assert list(f["process_median_s"]) == list(f["time_median_s"])
    assert set(f["stability"]) <= {"stable", "noisy"} and f["stability_reason"].str.contains("schema v2").all()
    assert f["host_busy"].isna().all() and f["ceiling_l1_bytes_s"].isna().all()


def test_version_4_files_upgrade_as_forward_passes(tmp_path):
    s = parse_suite({"name": "v4", "sweep": [{"layer": "relu", "input": "{b}x8", "axes": {"b": [1, 2]}}]})
    good = run_suite(s, out=tmp_path / "good", measure_fn=fake(), progress=False)
    table = pq.read_table(good.parquet)
    d = tmp_path / "v4"
    d.mkdir()
    _write(d / "part-v4.parquet", table.select(list(R.names_in_version(4))), b"4")
    f = load_runs([d]).frame
    assert len(f) == 2 and (f["pass"] == "forward").all() and f["grads"].isna().all()
    assert f["clock_mhz"].isna().all() and f["samples_rejected"].isna().all()
    assert list(f["case_id"]) == list(load_runs([tmp_path / "good"]).frame["case_id"])   # forward ids unchanged


def test_a_results_folder_leaves_its_reference_runs_out_unless_named(tmp_path):
    """``results/reference/`` holds committed evidence of other machines: reading ``results`` leaves
    it out; naming it (or a run inside it) reads it."""
    import shutil

    from harness.store import write_parquet
    src = next((ROOT / "results" / "reference").rglob("part-*.parquet"))
    theirs = load_runs(src).frame
    (tmp_path / "results" / "reference" / "r").mkdir(parents=True)
    (tmp_path / "results" / "mine").mkdir()
    shutil.copy(src, tmp_path / "results" / "reference" / "r" / "part-1of1.parquet")
    write_parquet(theirs.assign(run_id="mine-1"), tmp_path / "results" / "mine" / "part-1of1.parquet")
    assert set(load_runs(tmp_path / "results").frame["run_id"]) == {"mine-1"}
    assert set(load_runs(tmp_path / "results" / "reference").frame["run_id"]) == set(theirs["run_id"])
    assert set(load_runs([tmp_path / "results" / "reference" / "r", tmp_path / "results"]).frame["run_id"]) == \
        {"mine-1", *theirs["run_id"]}
