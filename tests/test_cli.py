"""The ``layerbench count`` command: formats, totals, and exit codes."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from harness.cli import main

CONV = ["count", "conv2d", "in=64", "out=128", "k=3", "s=2", "p=1", "g=1", "--input", "1x64x56x56"]


def test_table_with_totals(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(CONV + ["--dtype", "bf16"]) == 0
    out = capsys.readouterr().out
    # 128*28*28 outputs x 64*9 MACs = 57,802,752; bf16 bytes: (1*64*56*56 + 128*64*9 + 128)*2 read
    assert "57,802,752 MACs" in out and "115,605,504 FLOPs" in out
    assert f"{(64 * 56 * 56 + 128 * 64 * 9 + 128) * 2:,} B read" in out
    assert "bf16" in out


def test_json_and_csv(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(CONV + ["--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["totals"]["macs"] == 57_802_752 and doc["rows"][0]["op"] == "aten.convolution"
    assert main(CONV + ["--format", "csv"]) == 0
    from io import StringIO

    frame = pd.read_csv(StringIO(capsys.readouterr().out))
    assert int(frame["flops"].sum()) == 115_605_504


def test_convention_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["count", "conv_transpose2d", "in=8", "out=4", "k=3", "s=2", "p=1", "op=1", "--input",
                 "1x8x7x7", "--convention", "thop", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["totals"]["macs"] == 4 * 14 * 14 * 8 * 9


@pytest.mark.parametrize("argv,needle", [
    (["count", "conv2d", "in=64", "out=128", "k=3", "g=3", "--input", "1x64x8x8"], "groups=3"),
    (["count", "conv2d", "in=4", "out=4", "k=3", "--input", "1x4x8x8", "--dtype", "fp8"], "dtype='fp8'"),
    (["count", "nosuch"], "layer='nosuch'"),
])
def test_bad_input_exits_2_with_message(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert needle in capsys.readouterr().err


def test_console_script_entry_point() -> None:
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "count", "sdpa", "heads=2", "seq=4", "d=8",
                           "causal=1", "--format", "json"], capture_output=True, text=True, check=True)
    assert json.loads(proc.stdout)["totals"]["macs"] == 2 * (1 + 2 + 3 + 4) * (8 + 8)


def test_whole_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["count", "--model", "resnet50", "--format", "json"]) == 0
    totals = json.loads(capsys.readouterr().out)["totals"]
    assert totals["params"] == 25_557_032 and totals["flop_counter_disagreements"] == 0
    # docs/counting.md's ResNet-50 table (an eval batch norm writes its output only: 44,455,936 B over 53 norms)
    page = (Path(__file__).resolve().parents[1] / "docs" / "counting.md").read_text()
    total_row = next(line for line in page.splitlines() if line.startswith("| **total** | 174 |"))
    cells = [int(c.replace(",", "")) for c in total_row.strip("|").split("|")[1:]]
    assert cells == [174, totals["flops"], totals["macs"], totals["params"], totals["bytes_read"],
                     totals["bytes_written"]]
    assert main(["count", "conv2d", "--model", "resnet50"]) == 2
    assert main(["count", "--model", "mobilenetv2", "--format", "markdown"]) == 0    # nullable ints: '-'
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("| op ") and "total (canonical): 627,396,736 FLOPs" in out


def test_devices_command(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    assert main(["devices", "--no-load", "--store", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("CPU ") and "software  torch" in out
    assert "layerbench calibrate" in out                       # nothing stored in tmp_path yet
    assert main(["devices", "--no-load", "--format", "json", "--store", str(tmp_path)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["machine"]["cpu"]["logical_cpus"] >= 1 and doc["ceilings"] is None
    assert len(doc["identity"]["machine_id"]) == 12 and doc["identity"]["cpu"]["flags"]


def test_calibrate_without_cuda_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["calibrate", "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "--device='cuda'" in err and "CUDA device" in err


def test_render_ceilings_against_peak() -> None:
    from harness.ceilings.calibrate import Ceiling, Ceilings
    from harness.devices.peaks import Peak
    from harness.report.machine import render_ceilings

    c = Ceilings(key={"device": "cpu", "device_name": "X", "threads": 2}, measured_at="now",
                 entries=(Ceiling("compute", "fp32", 178e9, 2048, 0.0965, 0.014, 14),
                          Ceiling("compute", "bf16", 1.26e9, 512, 0.213, 0.017, 15),
                          Ceiling("memory", "fp32", 21.4e9, 256 * 2**20, 0.025, 0.15, 117)))
    text = render_ceilings(c, lambda d: Peak(156.5e9, None, d == "fp32", "formula"))
    assert "114%" in text                                      # 178 / 156.5
    assert "(not native)" in text and "256 MiB" in text and "21.4 GB/s" in text
    # the rate is of the best sample, beside the median sample's time: the headers say which is which
    assert "measured (best sample)" in text and "median time" in text


def test_version_and_help_import_nothing_heavy(capsys: pytest.CaptureFixture[str]) -> None:
    from harness import __version__

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"layerbench {__version__}"
    for argv, needle in ((["--help"], "usage: layerbench"), (["--version"], f"layerbench {__version__}"),
                         (["count", "--help"], "sdpa: b, batch, causal, d, h, head_dim, heads, s, seq, seq_k")):
        r = subprocess.run([sys.executable, "-X", "importtime", "-m", "harness.cli", *argv], capture_output=True,
                           text=True, check=True)
        top = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in r.stderr.splitlines() if "|" in line}
        assert not top & {"torch", "pandas", "numpy", "pyarrow", "matplotlib"} and needle in r.stdout, argv


def test_count_markdown_format(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(CONV + ["--format", "markdown"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| op ") and set(lines[1]) <= set("|:-") and "| aten.convolution |" in lines[2]
    assert lines[3] == "" and lines[4].startswith("total (canonical): 115,605,504 FLOPs, 57,802,752 MACs")


def test_format_names_match_compare_and_export() -> None:
    from harness.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))

    def choices(cmd: str) -> set[str]:
        return set(next(a for a in sub.choices[cmd]._actions if "--format" in a.option_strings).choices)
    assert choices("count") == {"table", "markdown", "json", "csv"}
    assert choices("compare") <= choices("count") and choices("export") - {"parquet"} <= choices("count")


@pytest.mark.parametrize("model,params,macs", [("mobilenetv2", 3_504_872, 300_774_272),
                                                ("vit-b16", 86_567_656, 17_563_828_224)])
def test_count_reference_models(model: str, params: int, macs: int, capsys: pytest.CaptureFixture[str]) -> None:
    # torchvision's published figures: MobileNetV2 3.50 M params, 0.30 GMACs; ViT-B/16 86.6 M params, 17.56 GMACs
    assert main(["count", "--model", model, "--format", "json"]) == 0
    totals = json.loads(capsys.readouterr().out)["totals"]
    assert totals["params"] == params and totals["macs"] == macs and totals["uncounted_ops"] == 0


def test_an_interrupted_command_exits_130_without_the_interpreters_teardown():
    """``entry`` (the console script): 130 leaves through ``os._exit`` once output is flushed (atexit
    hooks, where native teardown could crash, do not run); any other status exits normally."""
    import subprocess
    import sys
    code = ("import atexit, sys; from harness import cli; atexit.register(lambda: print('teardown ran'));"
            "cli.main = lambda: int(sys.argv[1]); print('measured', flush=False); cli.entry()")
    for status, teardown in ((130, False), (2, True), (0, True)):
        p = subprocess.run([sys.executable, "-c", code, str(status)], capture_output=True, text=True, timeout=60)
        assert p.returncode == status
        assert p.stdout.splitlines() == ["measured"] + (["teardown ran"] if teardown else [])


def test_an_interrupted_command_whose_reader_is_gone_still_exits_130():
    """``layerbench run ... | tee log`` and Ctrl-C: the reader dies too; the last flush fails quietly."""
    import subprocess
    import sys
    code = ("import sys, time; from harness import cli; time.sleep(0.5);"
            "cli.main = lambda: (sys.stdout.write('x' * 100), 130)[1]; cli.entry()")  # buffered until entry flushes
    import os
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}       # stdout buffered, as usual
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    p.stdout.close()                                  # the reader is gone before anything is written
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) == 130 and "Traceback" not in err, err


def test_ctrl_c_stops_a_run_started_with_sigint_ignored_and_says_one_true_thing(tmp_path):
    """A shell that starts a job in the background ignores SIGINT in it: ``layerbench`` restores the
    default handler, so Ctrl-C still stops the run (exit 130), and stderr says once what is stored."""
    import signal
    import subprocess
    import sys
    import time
    suite = tmp_path / "slow.toml"
    suite.write_text('name = "slow"\nbudget_s = 0.2\nwarmup_s = 0\nmin_reps = 3\n[[sweep]]\nlayer = "relu"\n'
                     'input = "{b}x4096"\naxes = { b = { start = 1, stop = 400, step = 1 } }\n')
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", str(suite), "--out", str(out), "--quiet",
                             "--calibrate", "never", "--processes", "1", "--no-report"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any(
                j.read_bytes().count(b"\n") >= 2 for j in out.glob("slow-cpu-*/rows-1of1.jsonl")):
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    said = [line for line in stderr.splitlines() if "interrupt" in line or "report" in line or "no rows" in line]
    assert len(said) == 1 and said[0].startswith("interrupted: ") and "row(s) stored in" in said[0], stderr
    assert said[0].endswith(f"layerbench run {suite} --resume continues") and "nothing new" not in stdout
