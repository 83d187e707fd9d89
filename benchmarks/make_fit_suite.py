"""Write suites/fit.toml: the configurations ``layerbench fit`` measures to learn a machine's efficiency.

Each family draws its points at random (seeded: the file is the same every time) from log-uniform
ranges of its sizes, keeps those whose call should take between about a microsecond and
``MAX_CALL_S`` on a 2-core CPU (FLOPs at ``CPU_FLOPS``, bytes at ``CPU_BYTES``), and then picks
points spread over the cost range (stratified by the log of the estimated time), so that the
suite covers launch-bound, cache-resident and DRAM-bound layers, and compute-bound ones, of every
layer kind the harness counts. ``layerbench fit`` then measures more where its held-out error is
high (``harness.predict.sampling``).

    python benchmarks/make_fit_suite.py            # rewrites suites/fit.toml
    python benchmarks/make_fit_suite.py --seed 7 --scale 0.5 --name holdout --out holdout.toml

The second form draws another design from the same space (``benchmarks/predict_accuracy.py`` measures
one as cases never in the training rows).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "suites" / "fit.toml"
SEED = 20261202
#: Rough rates of a 2-core CPU, only to keep every call short.
CPU_FLOPS, CPU_BYTES = 60e9, 8e9
MAX_CALL_S = 12e-3

rng = np.random.default_rng(SEED)
#: Points per family are multiplied by this (``--scale``).
SCALE = 1.0


def logint(lo: int, hi: int, multiple: int = 1) -> int:
    v = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    return max(multiple, int(round(v / multiple)) * multiple)


def spread(points: list[dict], cost: list[float], n: int) -> list[dict]:
    """``n`` of ``points`` spread over log(cost): one per quantile bin, the first point drawn in each."""
    keep = [(c, p) for c, p in zip(cost, points) if 1e-7 < c <= MAX_CALL_S]
    keep.sort(key=lambda cp: cp[0])
    if len(keep) <= n:
        return [p for _, p in keep]
    edges = np.linspace(0, len(keep), n + 1).astype(int)
    out = []
    for a, b in zip(edges[:-1], edges[1:]):
        out.append(keep[int(rng.integers(a, max(a + 1, b)))][1])
    return out


def zipped(points: list[dict], keys: list[str]) -> str:
    return "{ " + ", ".join(f"{k} = [{', '.join(fmt(p[k]) for p in points)}]" for k in keys) + " }"


def fmt(v: object) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else str(v)


def conv_dense(n: int, layout: str) -> list[dict]:
    pts, cost = [], []
    n = max(1, round(n * SCALE))
    for _ in range(40 * n):
        k = int(rng.choice([1, 3, 3, 5, 7]))
        s = int(rng.choice([1, 1, 2]))
        cin = logint(4, 512, 4)
        cout = logint(4, 512, 4)
        size = logint(4, 112)
        batch = int(rng.choice([1, 1, 2, 4, 8]))
        if size + 2 * (k // 2) < k:
            continue
        out = (size + 2 * (k // 2) - k) // s + 1
        flops = 2 * batch * cout * out * out * cin * k * k
        moved = 4 * (batch * cin * size * size + cin * cout * k * k + batch * cout * out * out)
        pts.append(dict(batch=batch, **{"in": cin}, out=cout, k=k, s=s, size=size))
        cost.append(flops / CPU_FLOPS + moved / CPU_BYTES + 3e-6)
    return spread(pts, cost, n)


def conv_grouped(n: int) -> list[dict]:
    pts, cost = [], []
    n = max(1, round(n * SCALE))
    for _ in range(40 * n):
        c = logint(8, 512, 8)
        divs = [g for g in (2, 4, 8, 16, 32, 64, 128, 256, 512) if c % g == 0 and g <= c] + [c, c]
        g = int(rng.choice(divs))
        k = int(rng.choice([3, 3, 5]))
        s = int(rng.choice([1, 1, 2]))
        size = logint(7, 112)
        batch = int(rng.choice([1, 2, 4, 8]))
        out = (size + 2 * (k // 2) - k) // s + 1
        flops = 2 * batch * c * out * out * (c // g) * k * k
        moved = 4 * (2 * batch * c * size * size + c * (c // g) * k * k)
        pts.append(dict(batch=batch, c=c, g=g, k=k, s=s, size=size))
        cost.append(flops / CPU_FLOPS * 3 + moved / CPU_BYTES + 3e-6)
    return spread(pts, cost, n)


def conv_transpose(n: int) -> list[dict]:
    pts, cost = [], []
    n = max(1, round(n * SCALE))
    for _ in range(40 * n):
        k = int(rng.choice([2, 3, 4]))
        s = int(rng.choice([1, 2, 2]))
        cin, cout = logint(8, 256, 8), logint(8, 256, 8)
        size = logint(4, 56)
        batch = int(rng.choice([1, 2, 4]))
        flops = 2 * batch * cin * cout * size * size * k * k
        moved = 4 * (batch * cin * size * size * (1 + s * s) + cin * cout * k * k)
        pts.append(dict(batch=batch, **{"in": cin}, out=cout, k=k, s=s, size=size))
        cost.append(flops / CPU_FLOPS + moved / CPU_BYTES + 3e-6)
    return spread(pts, cost, n)


def linear(n: int) -> list[dict]:
    pts, cost = [], []
    n = max(1, round(n * SCALE))
    for _ in range(40 * n):
        tokens, fin, fout = logint(1, 4096), logint(16, 4096, 16), logint(16, 4096, 16)
        pts.append(dict(tokens=tokens, **{"in": fin}, out=fout))
        cost.append(2 * tokens * fin * fout / CPU_FLOPS + 4 * (tokens * (fin + fout) + fin * fout) / CPU_BYTES + 3e-6)
    return spread(pts, cost, n)


def mm(n: int, batched: bool) -> list[dict]:
    pts, cost = [], []
    n = max(1, round(n * SCALE))
    for _ in range(40 * n):
        b = logint(2, 256) if batched else 1
        hi = 256 if batched else 2048
        m, k, nn = logint(8, hi, 8), logint(8, hi, 8), logint(8, hi, 8)
        p = dict(m=m, n=nn, k=k)
        if batched:
            p["b"] = b
        pts.append(p)
        cost.append(2 * b * m * nn * k / CPU_FLOPS + 4 * b * (m * k + k * nn + m * nn) / CPU_BYTES + 3e-6)
    return spread(pts, cost, n)


def sdpa(n: int) -> list[dict]:
    pts, cost = [], []
    n = max(1, round(n * SCALE))
    for _ in range(40 * n):
        b, h = int(rng.choice([1, 2, 4])), int(rng.choice([1, 2, 4, 8, 12, 16]))
        seq, d = logint(16, 1024, 8), int(rng.choice([32, 64, 64, 128]))
        causal = bool(rng.integers(0, 2))
        pts.append(dict(batch=b, heads=h, seq=seq, head_dim=d, causal=causal))
        cost.append(4 * b * h * seq * seq * d / CPU_FLOPS * (0.6 if causal else 1) + 3e-5)
    return spread(pts, cost, n)


def mha(n: int) -> list[dict]:
    pts, cost = [], []
    n = max(1, round(n * SCALE))
    for _ in range(40 * n):
        b, h = int(rng.choice([1, 2, 4])), int(rng.choice([4, 8, 12]))
        embed = h * int(rng.choice([32, 64]))
        seq = logint(16, 512, 8)
        pts.append(dict(batch=b, heads=h, embed=embed, seq=seq, causal=bool(rng.integers(0, 2))))
        cost.append((8 * b * seq * embed * embed + 4 * b * seq * seq * embed) / CPU_FLOPS + 1e-4)
    return spread(pts, cost, n)


def tensor4(n: int, extra: dict | None = None, factor: float = 1.0) -> list[dict]:
    pts, cost = [], []
    n = max(1, round(n * SCALE))
    for _ in range(40 * n):
        batch, c, size = int(rng.choice([1, 2, 4, 8, 16])), logint(4, 512, 4), logint(4, 112)
        p = dict(batch=batch, c=c, size=size)
        if extra:
            p.update({k: int(rng.choice(v)) for k, v in extra.items()})
            if "g" in p and c % p["g"]:
                continue
        pts.append(p)
        cost.append(factor * 8 * batch * c * size * size / CPU_BYTES + 3e-6)
    return spread(pts, cost, n)


def tokens3(n: int) -> list[dict]:
    pts, cost = [], []
    n = max(1, round(n * SCALE))
    for _ in range(40 * n):
        batch, seq, c = int(rng.choice([1, 2, 4, 8])), logint(1, 512), logint(16, 2048, 16)
        pts.append(dict(batch=batch, seq=seq, c=c))
        cost.append(8 * batch * seq * c / CPU_BYTES + 3e-6)
    return spread(pts, cost, n)


def sweep(family: str, layer: str, points: list[dict], keys: list[str], *, input: str | list[str] | None = None,
          derive: str | None = None, memory_format: str | None = None) -> str:
    lines = ["[[sweep]]", f'family = "{family}"', f'layer = "{layer}"']
    if input is not None:
        lines.append("input = " + (f'"{input}"' if isinstance(input, str) else
                                   "[" + ", ".join(f'"{t}"' for t in input) + "]"))
    lines.append(f"zip = {zipped(points, keys)}")
    if derive:
        lines.append(f"derive = {derive}")
    if memory_format:
        lines.append(f'memory_format = ["{memory_format}"]')
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    import argparse
    global rng, SCALE
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--scale", type=float, default=1.0, help="points per family x this")
    ap.add_argument("--name", default="fit")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    rng, SCALE = np.random.default_rng(args.seed), args.scale
    write(Path(args.out), args.seed, args.name)


def write(out: Path, seed: int, name: str) -> None:
    conv_keys = ["batch", "in", "out", "k", "s", "size"]
    t4 = "{batch}x{c}x{size}x{size}"
    parts = [
        sweep("conv", "conv2d", conv_dense(64, "nchw"), conv_keys, input="{batch}x{in}x{size}x{size}",
              derive='{ p = "k // 2" }'),
        sweep("conv-channels-last", "conv2d", conv_dense(20, "channels_last"), conv_keys,
              input="{batch}x{in}x{size}x{size}", derive='{ p = "k // 2" }', memory_format="channels_last"),
        sweep("conv-grouped", "conv2d", conv_grouped(36), ["batch", "c", "g", "k", "s", "size"], input=t4,
              derive='{ in = "c", out = "c", p = "k // 2" }'),
        sweep("conv-transpose", "conv_transpose2d", conv_transpose(14), conv_keys, input="{batch}x{in}x{size}x{size}"),
        sweep("linear", "linear", linear(30), ["tokens", "in", "out"], input="{tokens}x{in}"),
        sweep("gemm", "mm", mm(14, False), ["m", "n", "k"]),
        sweep("gemm", "bmm", mm(12, True), ["b", "m", "n", "k"]),
        sweep("attention", "sdpa", sdpa(20), ["batch", "heads", "seq", "head_dim", "causal"]),
        sweep("attention", "mha", mha(8), ["batch", "heads", "embed", "seq", "causal"]),
        sweep("norm", "layernorm", tokens3(12), ["batch", "seq", "c"], input="{batch}x{seq}x{c}"),
        sweep("norm", "batchnorm2d", tensor4(10), ["batch", "c", "size"], input=t4),
        sweep("norm", "groupnorm", tensor4(8, {"g": [1, 2, 4, 8]}, 2.0), ["batch", "c", "size", "g"], input=t4),
        *(sweep("activation", act, tensor4(5), ["batch", "c", "size"], input=t4)
          for act in ("relu", "gelu", "silu", "sigmoid", "tanh", "hardswish")),
        sweep("binary", "add", tensor4(6, factor=1.5), ["batch", "c", "size"], input=[t4, t4]),
        sweep("binary", "mul", tensor4(5, factor=1.5), ["batch", "c", "size"], input=[t4, t4]),
        sweep("pool", "maxpool2d", tensor4(8, {"k": [2, 3], "s": [1, 2]}), ["batch", "c", "size", "k", "s"],
              input=t4),
        sweep("pool", "avgpool2d", tensor4(7, {"k": [2, 3], "s": [1, 2]}), ["batch", "c", "size", "k", "s"],
              input=t4),
        sweep("pool", "adaptiveavgpool2d", tensor4(5), ["batch", "c", "size"], input=t4),
        sweep("softmax", "softmax", tokens3(8), ["batch", "seq", "c"], input="{batch}x{seq}x{c}"),
    ]
    head = f'''# The configurations `layerbench fit` measures to learn this machine's efficiency (harness/predict):
# every layer kind the harness counts, drawn log-uniformly over its sizes and spread over the cost range,
# from launch-bound calls of a few microseconds to compute-bound ones of about 10 ms on a 2-core CPU.
# Written by `python benchmarks/make_fit_suite.py` (seed {seed}); `layerbench fit` adds points near the
# layers its held-out error is high on (nn-Meter's adaptive sampling).
name = "{name}"
description = "layerbench fit: every layer kind over its sizes, spread over the cost range (efficiency model)"
devices = ["cpu", "cuda"]
dtypes = ["fp32"]
budget_s = 0.25
target_rel_ci = 0.02
warmup_s = 0.03
min_reps = 8
processes = 1
'''
    out.write_text(head + "\n" + "\n\n".join(parts) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
