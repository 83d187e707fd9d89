"""Console output of a run: each line names what tells its case apart (kernel 1/3/5, nchw vs
channels_last, the solved channels of an equal-FLOPs family), plain log lines when stderr is not a
terminal, and no third-party output (profiler, oneDNN) in a real run's output."""

import subprocess
import sys
import textwrap

from harness.backends import resolve_device
from harness.record import Row, Status
from harness.runner import make_context
from harness.runner.progress import brief, describe, varying_names
from harness.runner.rows import failed
from harness.suite import load_suite


def rows_of(suite_name: str) -> list[Row]:
    suite = load_suite(suite_name)
    ctx = make_context(suite, resolve_device("cpu"), list(suite.dtypes), None, "auto", (1, 1), "console-test", "never",
                       None)
    return [Row(key=ctx.key(c), case=ctx.case_fields(c), health=failed(Status.SKIPPED, "not run"),
                peaks=ctx.peaks_for(c, {}), provenance=ctx.provenance()) for c in suite.cases()]


def test_quick_suite_lines_name_what_varies():
    suite = load_suite("quick")
    varying = varying_names(suite)
    assert varying["conv-kernel"] == {"k"}
    assert varying["groups-equal-flops"] == {"g", "c"}
    assert varying["pointwise-vs-3x3"] == {"k", "p", "c"}
    assert varying["memory-format"] == {"memory_format"}   # the family's two layouts
    lines = [describe(r, varying) for r in rows_of("quick")]
    assert len(set(lines)) == len(lines)                   # every case prints differently
    assert lines[:3] == ["conv-kernel conv2d k=1 fp32", "conv-kernel conv2d k=3 fp32", "conv-kernel conv2d k=5 fp32"]
    assert "groups-equal-flops conv2d c=512 g=64 fp32" in lines
    assert {"memory-format conv2d nchw fp32", "memory-format conv2d channels_last fp32"} <= set(lines)
    assert "attention sdpa causal=True seq=512 fp32" in lines   # no layout where none varies
    assert "linear linear in=2048 fp32" in lines


def test_dtypes_distinguish_rows():
    lines = [describe(r, varying_names(load_suite("dtypes"))) for r in rows_of("dtypes")]
    assert len(set(lines)) == len(lines)


def test_failed_row_line_says_why():
    row = rows_of("quick")[0]
    assert brief(row).endswith(": skipped (not run)")


RUN = textwrap.dedent("""
    import logging, sys
    from harness.runner import run_suite
    from harness.suite import parse_suite
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    suite = parse_suite({"name": "cons", "budget_s": 0.01, "warmup_s": 0.001, "min_reps": 3, "sweep": [
        {"family": "conv", "layer": "conv2d", "input": "1x8x10x10", "params": {"in": 8, "out": 8},
         "axes": {"k": [1, 3]}, "memory_format": ["nchw", "channels_last"]}]}, "cons.toml")
    run_suite(suite, out=sys.argv[1], calibrate="never")
""")


def test_plain_lines_and_no_third_party_noise_when_not_a_tty(tmp_path):
    r = subprocess.run([sys.executable, "-c", RUN, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = [x for x in r.stderr.splitlines() if x.startswith("[")]
    heads = [x.split(":")[0] for x in lines]
    assert [h.split()[0] for h in heads] == ["[1/4]", "[2/4]", "[3/4]", "[4/4]"]
    for h, (k, fmt) in zip(heads, [("k=1", "nchw"), ("k=1", "channels_last"), ("k=3", "nchw"),
                                   ("k=3", "channels_last")]):
        assert f" {k} " in h and h.endswith(f" {fmt} fp32")
    noise = ("USDT", "profiler_start", "onednn_verbose", "dnnl_verbose", "\r", "\x1b[")
    assert not any(n in r.stderr + r.stdout for n in noise)


def test_a_line_tags_its_process_verdict_not_the_raw_noise_flag():
    """The tag is the verdict of the process's samples (the row's own with one process): a row whose
    samples split at two speeds reads ``(bimodal)``, never ``(noisy)`` while the summary says bimodal;
    a stable row carries no tag."""
    import dataclasses

    from harness.runner.repeats import single
    from harness.runner.rows import build_row
    from harness.timing import Measurement
    suite = load_suite("quick")
    ctx = make_context(suite, resolve_device("cpu"), ["fp32"], None, "auto", (1, 1), "console-test", "never", None)
    case = next(iter(suite.cases()))

    def timed(samples):
        def fake(fn, *, inputs, **kw):
            return Measurement(device="cpu", timer="fake", mode="hot", samples_s=tuple(samples), number=1,
                               warmup_calls=0, warmup_s=0.0, estimate_s=samples[0], sampling_s=0.01, threads=1,
                               gc_paused=True, rotation=1, stop_reason="converged", target_rel_ci=0.01)
        return single(build_row(case, ctx, fake, False), 0.0)

    split = timed([1.0e-3, 1.5e-3] * 6 + [1.0e-3] * 8)
    assert split.health.stability == "bimodal" and split.timing.noisy
    assert brief(split).endswith(" (bimodal)")
    steady = timed([1.0e-3] * 20)
    assert steady.health.stability == "stable" and brief(steady).endswith(": 1 ms, 6.42 GFLOP/s")
    # conv2d 64 -> 64, 1x1 on 28x28: 2 x 64 x 64 x 784 = 6.42 MFLOP in 1 ms
    unjudged = dataclasses.replace(split, health=dataclasses.replace(split.health, stability=None))
    assert brief(unjudged).endswith(" (noisy)")
