"""The report: self-contained HTML, a model rendered by registered renderers, byte-identical on
stored data whatever the live machine or working directory, older runs saying their peaks are
not stored, machines labelled, hostile family names drawn safely."""

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from harness.report import build_report
from harness.report.render import RENDERERS
from harness.runner import run_suite
from harness.suite import parse_suite

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "results" / "reference" / "2026-11-24-amd-epyc-zen3-2cpu"
GROUPS = {"family": "groups", "layer": "conv2d", "input": "1x{c}x8x8", "params": {"k": 3, "p": 1},
          "axes": {"g": [1, 4]}, "solve": {"axis": "c", "keep": "c * c / g", "like": {"c": 8, "g": 1},
                                           "multiple_of": "g"}, "derive": {"in": "c", "out": "c"}}


def timed_run(tmp_path, sweeps, times, name="rep"):
    from test_runner import fake_measure
    it = iter(times)

    def timed(fn, **kw):
        return fake_measure(next(it))(fn, **kw)
    return run_suite(parse_suite({"name": name, "sweep": sweeps}), out=tmp_path, measure_fn=timed, progress=False)


def test_report_is_self_contained(tmp_path):
    run = timed_run(tmp_path, [GROUPS], [1e-4, 5e-4])
    rep = build_report([run.run_dir], tmp_path / "report", formats=("html", "markdown", "json"))
    text = rep.html.read_text()
    assert "data:image/png;base64," in text and "http://" not in text and "https://" not in text
    assert len(rep.findings) == 1 and "5.0x as long" in rep.findings[0]
    unescaped = rep.markdown.read_text().replace("\\", "")
    assert rep.findings[0] in unescaped and "rows.csv" in text
    names = {p.name for p in rep.files}
    assert {"report.html", "report.md", "report.json", "rows.csv"} <= names
    assert {p.suffix for p in rep.files} >= {".png", ".svg"}
    doc = json.loads((tmp_path / "report" / "report.json").read_text())
    assert doc["schema_version"] == 3 and len(doc["rows"]) == 2 and doc["findings"][0]["spread"] == pytest.approx(5)
    assert {"html", "markdown", "json", "csv", "parquet"} <= set(RENDERERS)


def test_report_is_identical_without_live_probes_and_elsewhere(tmp_path, monkeypatch):
    run = timed_run(tmp_path, [GROUPS], [1e-4, 5e-4])
    a = build_report([run.run_dir], tmp_path / "a", formats=("html", "markdown", "json"))
    import harness.devices.cpu as cpu
    import harness.devices.gpu as gpu
    import harness.devices.identity as identity

    def broken(*args, **kwargs):
        raise RuntimeError("probe unavailable")
    for mod, name in ((cpu, "describe_cpu"), (cpu, "cpuinfo"), (gpu, "describe_gpus"), (identity, "_hardware"),
                      (identity, "describe_machine_identity")):
        monkeypatch.setattr(mod, name, broken)
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)
    b = build_report([run.run_dir], tmp_path / "b", formats=("html", "markdown", "json"))
    for pa, pb in zip(sorted(a.files), sorted(b.files)):
        assert pa.name == pb.name and pa.read_bytes() == pb.read_bytes(), pa.name


def test_older_runs_say_their_peaks_are_not_stored(tmp_path):
    rep = build_report([str(REFERENCE / "quick-cpu-*")], tmp_path / "r", formats=("markdown",))
    md = rep.markdown.read_text()
    assert "store no peaks: their utilization is unknown" in md
    rows = pd.read_csv(tmp_path / "r" / "rows.csv")
    assert rows["util_peak"].isna().all() and (rows["peak_source"] == "not stored").all()


def test_two_machines_are_labelled(tmp_path):
    run = timed_run(tmp_path, [GROUPS], [1e-4, 5e-4])
    rep = build_report([run.run_dir, str(REFERENCE / "quick-cpu-20261124T014954Z")], tmp_path / "r",
                       formats=("markdown",))
    md = rep.markdown.read_text()
    assert "rows from several machines" in md and "cross-device view" in md


def test_hostile_family_names_are_drawn_safely(tmp_path):
    sweep = dict(GROUPS, family="$\\frac{a}{ /../x {b} ^_^ $")
    run = timed_run(tmp_path, [sweep], [1e-4, 5e-4])
    rep = build_report([run.run_dir], tmp_path / "r", formats=("html", "markdown"))
    for p in rep.files:
        assert p.parent == tmp_path / "r" and all(ch.isalnum() or ch in "._-" for ch in p.name), p.name
    assert "refused" not in rep.markdown.read_text()
    assert not any("left out" in line for line in rep.markdown.read_text().splitlines())
    assert os.listdir(tmp_path / "r")
