"""benchmarks/gpu_first_run.py: importable and --help-able without a GPU, one clear line and exit
code 2 without one, and its sections run one after another within the budget."""

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_first_run.py"


def load():
    spec = importlib.util.spec_from_file_location("gpu_first_run", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_importable_without_torch_being_imported():
    code = f"import importlib.util, sys; s = importlib.util.spec_from_file_location('g', {str(SCRIPT)!r}); " \
           "m = importlib.util.module_from_spec(s); s.loader.exec_module(m); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_help_works_anywhere():
    p = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True)
    assert p.returncode == 0 and "first GPU window" in p.stdout and "OUT_DIR" in p.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_one_clear_line_and_exit_code_2(tmp_path):
    p = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "out")], capture_output=True, text=True,
                       cwd=ROOT)
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert p.returncode == 2 and len(lines) == 1 and lines[0].startswith("gpu_first_run: no CUDA device")
    assert not (tmp_path / "out").exists()


def test_sections_record_failures_and_skip_past_the_budget(tmp_path):
    g = load()
    report = g.Report(tmp_path)

    def boom():
        raise RuntimeError("no triton")
    g.run_sections([("event_tick", lambda: {"ok": 1}), ("modes", boom), ("clocks", lambda: {"ok": 2}),
                    ("calibrate", lambda: {"ok": 3})], report, deadline=time.monotonic() + 30)
    data = json.loads((tmp_path / "first_run.json").read_text())
    assert data["event_tick"]["result"] == {"ok": 1} and data["clocks"]["result"] == {"ok": 2}
    assert data["modes"]["result"]["error"] == "RuntimeError: no triton"
    assert "skipped" in data["calibrate"]["result"]            # needs 60 s, 30 were left
    assert "## modes" in (tmp_path / "first_run.txt").read_text()
