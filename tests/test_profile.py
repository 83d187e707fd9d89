"""What ran below ATen: oneDNN verbose lines parsed (3.x and 2.x formats, recorded), a real grouped
conv traced, native output captured at the file-descriptor level (a child process writes to fd 1
and 2 from Python and from C), and counting or profiling that never imports torch._dynamo."""

import subprocess
import sys
import textwrap

import pytest
import torch

from harness.timing.profile import parse_onednn, what_ran

# recorded on this project's machine (torch 2.13, oneDNN v3.12): Conv2d(512, 512, 3, padding=1, groups=64)
NEW = """\
onednn_verbose,v1,info,oneDNN v3.12.0 (commit 80afa71049cd69a3df32adcccb623b12cd7baa22)
onednn_verbose,v1,info,cpu,runtime:OpenMP,nthr:2
onednn_verbose,v1,primitive,info,template:operation,engine,primitive,implementation,prop_kind,memory_descriptors
onednn_verbose,v1,graph,info,template:operation,engine,partition_id,partition_kind,op_names,data_formats
onednn_verbose,v1,primitive,create:cache_miss,cpu,convolution,jit:avx2,forward_training,src:f32::blocked,,0.5
onednn_verbose,v1,primitive,exec,cpu,reorder,jit:blk,undef,src:f32::blocked:abcd::f0 dst:f32::blocked:aBcd8b::f0,attr-scratchpad:user,,1x512x28x28,0.0788574
onednn_verbose,v1,primitive,exec,cpu,reorder,jit:uni,undef,src:f32::blocked:abcde::f0 dst:f32::blocked:aBCde8c8b::f0,attr-scratchpad:user,,64x8x8x3x3,0.0649414
onednn_verbose,v1,primitive,exec,cpu,convolution,jit:avx2,forward_training,src:f32:a:blocked:aBcd8b::f0,attr-scratchpad:user,alg:convolution_direct,g64mb1_ic512oc512_ih28oh28kh3sh1dh0ph1_iw28ow28kw3sw1dw0pw1,1.24097
onednn_verbose,v1,primitive,exec,cpu,reorder,jit:blk,undef,src:f32::blocked:aBcd8b::f0 dst:f32::blocked:abcd::f0,attr-scratchpad:user,,1x512x28x28,0.512939
"""  # noqa: E501
# oneDNN 2.x (torch 1.x-2.0): no version/marker fields; a timestamped 3.x line
OLD = """\
dnnl_verbose,info,oneDNN v2.7.3 (commit 7710dd0bd2b5a6ba3ef6ac6c9bf04b3aec8e2b6e)
dnnl_verbose,exec,cpu,reorder,simple:any,undef,src_f32::blocked:abcd:f0 dst_f32::blocked:Acdb16a:f0,,,64x3x7x7,0.0249023
dnnl_verbose,exec,cpu,convolution,brgconv:avx512_core,forward_inference,src_f32::blocked:acdb:f0,,alg:convolution_direct,mb1_ic3oc64_ih224oh112kh7sh2,1.83
onednn_verbose,1700000000123.5,primitive,exec,cpu,convolution,brgconv:avx512_core,forward_inference,src_f32,,,mb1,0.9
USDT:2026-11-24 06:21:57 22233:22233 SyncActivityProfilerHandler.cpp:52] profiler_start
"""


def test_parse_new_format():
    got = parse_onednn(NEW)
    assert got.primitives == "reorder:jit:blk x2;reorder:jit:uni x1;convolution:jit:avx2 x1"
    assert got.reorders == 3


def test_parse_old_and_timestamped_formats():
    got = parse_onednn(OLD)
    assert got.primitives == "reorder:simple:any x1;convolution:brgconv:avx512_core x2"
    assert got.reorders == 1


def test_parse_nothing():
    assert (parse_onednn("").primitives, parse_onednn("").reorders) == (None, 0)


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without mkldnn")
def test_real_grouped_conv_records_primitives(capfd):
    m = torch.nn.Conv2d(64, 64, 3, padding=1, groups=8).eval()
    x = torch.randn(1, 64, 14, 14)
    with torch.inference_mode():
        m(x)
        ran = what_ran(m, (x,), "cpu")
    assert "convolution:" in (ran["onednn_primitives"] or "")
    assert ran["onednn_reorders"] >= 0 and ran["kernels"].startswith("aten::")
    out, err = capfd.readouterr()
    assert "onednn_verbose" not in out + err and "USDT" not in out + err


def test_relu_runs_no_onednn():
    with torch.inference_mode():
        ran = what_ran(torch.nn.ReLU(), (torch.randn(4, 8),), "cpu")
    assert ran["onednn_primitives"] is None and ran["onednn_reorders"] in (0, None)


CHILD = textwrap.dedent("""
    import ctypes, os, sys
    from harness.timing.profile import capture_fds
    print("before", flush=True)
    with capture_fds() as got:
        os.write(1, b"from-fd-1\\n")
        os.write(2, b"from-fd-2\\n")
        ctypes.CDLL(None).printf(b"from-c-printf\\n")    # buffered in C stdio: must not leak later
        print("from-python")
    print("after", flush=True)
    print("captured:" + got.text.replace("\\n", "|"), file=sys.stderr)
""")


def test_capture_fds_in_a_child_process():
    r = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "before\nafter\n"
    captured = r.stderr.strip().splitlines()[-1]
    for text in ("from-fd-1", "from-fd-2", "from-c-printf", "from-python"):
        assert text in captured
    assert "from-fd-2" not in r.stderr.replace(captured, "")


DYNAMO = textwrap.dedent("""
    import sys, torch
    from harness.runner.rows import analytic_counts
    from harness.suite import load_suite
    from harness.timing.profile import what_ran
    cases = [c for c in load_suite("quick").cases() if c.layer == "conv2d"]
    for c in cases:
        analytic_counts(c)
    m = torch.nn.Conv2d(8, 8, 3)
    with torch.inference_mode():
        what_ran(m, (torch.randn(1, 8, 6, 6),), "cpu")
    print(len(cases), "torch._dynamo" in sys.modules)
""")


def test_counting_and_profiling_do_not_import_dynamo():
    r = subprocess.run([sys.executable, "-c", DYNAMO], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["13", "False"]         # 11 forward conv2d cases and 2 backward ones
