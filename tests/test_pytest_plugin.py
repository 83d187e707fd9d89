"""The pytest plugin installed with the package (entry point ``pytest11``): a tiny suite run through
pytest-benchmark's ``benchmark`` fixture in a real pytest subprocess, its JSON read back by
layerbench; without ``--layerbench-suite`` the plugin imports nothing heavy and adds no test."""

import importlib.metadata
import json
import subprocess
import sys

from harness.store import load_results

TINY = 'name = "tiny"\n[[sweep]]\nfamily = "act"\nlayer = "relu"\ninput = "{b}x16"\naxes = { b = [1, 2] }\n'
#: A user's own test: it fails if collected (the suite replaces the collected tests) and records whether
#: torch was imported by the time it ran (the plugin must not import it).
USER_TEST = "import sys\n\ndef test_user():\n    assert 'torch' not in sys.modules\n"


def _pytest(cwd, *args):
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
                          capture_output=True, text=True, cwd=cwd, timeout=300)


def test_entry_point_is_installed():
    eps = importlib.metadata.entry_points(group="pytest11")
    assert [e.value for e in eps if e.name == "layerbench"] == ["harness.pytest_plugin"]


def test_costs_nothing_without_the_option(tmp_path):
    (tmp_path / "test_user.py").write_text(USER_TEST)
    r = _pytest(tmp_path)
    assert r.returncode == 0 and "1 passed" in r.stdout, r.stdout[-2000:]
    r = subprocess.run([sys.executable, "-c", "import sys, harness.pytest_plugin; print(sorted(m for m in "
                        "('torch', 'pandas', 'numpy') if m in sys.modules))"], capture_output=True, text=True)
    assert r.stdout.strip() == "[]", r.stdout + r.stderr


def test_suite_runs_through_pytest_benchmark(tmp_path):
    (tmp_path / "tiny.toml").write_text(TINY)
    (tmp_path / "test_user.py").write_text("def test_user():\n    raise AssertionError('collected')\n")
    out = tmp_path / "pb.json"
    r = _pytest(tmp_path, "--layerbench-suite", "tiny.toml", "--layerbench-dtype", "fp32",
                f"--benchmark-json={out}", "--benchmark-max-time=0.01", "--benchmark-min-rounds=3")
    assert r.returncode == 0 and "2 passed" in r.stdout, r.stdout[-3000:] + r.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert sorted(b["name"] for b in doc["benchmarks"]) == ["test_layer[act relu b=1 nchw fp32]",
                                                            "test_layer[act relu b=2 nchw fp32]"]
    # relu on b x 16 fp32: one FLOP per element; 4 bytes read and written per element
    extra = {b["extra_info"]["input_shapes"]: b["extra_info"] for b in doc["benchmarks"]}
    assert extra["1x16"]["flops"] == 16 and extra["2x16"]["bytes_read"] == 2 * 16 * 4
    df = load_results(out)
    assert len(df) == 2 and set(df["flops"]) == {16, 32} and (df["timer"] == "pytest-benchmark").all()
    assert (df["time_median_s"] > 0).all() and (df["suite"] == "tiny").all() and df["row_id"].is_unique


def test_bad_suite_is_one_line(tmp_path):
    (tmp_path / "bad.toml").write_text('name = "bad"\n[[sweep]]\nlayer = "nosuch"\ninput = "1x4"\n')
    r = _pytest(tmp_path, "--layerbench-suite", "bad.toml")
    text = r.stderr + r.stdout
    assert r.returncode == 4 and "ERROR: --layerbench-suite: bad.toml: sweep[0].layer='nosuch'" in text, text[-2000:]
    assert "Traceback" not in text
