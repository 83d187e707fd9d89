"""nox sessions: ``bench-cpu`` (the main job), ``bench-gpu`` (nightly GPU suites), ``tests``, ``lint``,
``bench-count``, ``bench-timer``, ``bench-suite``, ``bench-analysis``, ``bench-gpu-timing``, ``bench-workers``.

The CPU sessions install torch from ``LAYERBENCH_TORCH`` (default ``torch==2.13.0``, the CPU
build this project's CI uses) before the package, so pip does not pull a CUDA build of a
newer torch. Set ``LAYERBENCH_TORCH=torch`` to take whatever your index serves.
"""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["tests", "lint"]
nox.options.reuse_existing_virtualenvs = True
TORCH = os.environ.get("LAYERBENCH_TORCH", "torch==2.13.0")


def _install(session: nox.Session, *extras: str) -> None:
    """torch first, then the package constrained to the exact torch that went in.

    In one resolution pip backtracked (boto3 against s3fs' botocore pin) and swapped the local CPU
    wheel ``2.13.0+cpu`` for PyPI's CUDA ``2.13.0``, several GB that filled CI's disk (2026-11-24);
    installed apart without a constraint, a dependency replaced the pin with torch 2.14.1."""
    session.install(TORCH)
    version = session.run("python", "-c", "import importlib.metadata as m; print(m.version('torch'))",
                          silent=True).strip()
    # beside the venv, not session.create_tmp(): that sets TMPDIR inside the venv, where Ray's agents refuse to run
    constraint = os.path.join(session.virtualenv.location, "torch-constraint.txt")
    with open(constraint, "w") as out:
        out.write(f"torch=={version}\n")
    session.install("-c", constraint, "-e", f".[{','.join(extras)}]" if extras else ".")


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (peer counters installed, so the preset tests run)."""
    _install(session, "test", "peers")
    session.run("pytest", "-q", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over the package, tests, benchmarks and this file; import-linter's architecture contracts
    (``[tool.importlinter]`` in pyproject.toml: the pipeline's layers, no import circles)."""
    session.install("ruff>=0.6", "import-linter>=2.1")
    session.run("ruff", "check", "harness", "tests", "benchmarks", "noxfile.py")
    session.run("lint-imports", "--no-cache", env={"PYTHONPATH": "."})


@nox.session(name="bench-count")
def bench_count(session: nox.Session) -> None:
    """Print the analytic counter's speed and memory figures (ResNet-50, a 100 GB meta model)."""
    _install(session)
    session.run("python", "benchmarks/count_speed.py", *session.posargs)


@nox.session(name="bench-timer")
def bench_timer(session: nox.Session) -> None:
    """harness.measure vs torch.utils.benchmark on five CPU layers: ratio of medians, spread over 3 repeats."""
    _install(session)
    session.run("python", "benchmarks/timer_agreement.py", *session.posargs)


@nox.session(name="bench-gpu-timing", python=False)
def bench_gpu_timing(session: nox.Session) -> None:
    """GPU timing evidence (ceilings vs datasheet, measure vs do_bench, graph mode) in the current
    environment, which must have a CUDA torch and triton; fails with a clear message without a GPU."""
    session.run("python", "benchmarks/gpu_timing.py", *session.posargs, env={"PYTHONPATH": "."})


@nox.session(name="bench-cpu")
def bench_cpu(session: nox.Session) -> None:
    """The main job: the quick suite on CPU -> results/quick-cpu-<time>/ (Parquet table, HTML report under
    report/), then a summary: utilization per family, roofline labels, stability, top findings, report path."""
    _install(session)
    session.run("layerbench", "run", "quick", "--device", "cpu", *session.posargs)


GPU_SUITES = ["conv", "groups", "pointwise", "conv-transpose", "gemm", "memory-bound", "attention", "dtypes",
              "resnet50", "mobilenetv2", "vit-b16", "training"]
#: Arguments a nightly GPU suite adds: the training step in both precisions a GPU trains in.
GPU_ARGS = {"training": ["--dtype", "fp32,bf16"]}


@nox.session(name="bench-gpu")
def bench_gpu(session: nox.Session) -> None:
    """The nightly GPU suites on cuda (exits with a clear error when torch sees no CUDA device).

    Installs ``LAYERBENCH_GPU_TORCH`` (default: ``torch`` from the index, a CUDA build) unless run
    with ``--no-venv``, which uses the current environment. Extra arguments go to ``layerbench run``
    (e.g. ``-- --shard 1/4``)."""
    if session.venv_backend != "none":
        session.install(os.environ.get("LAYERBENCH_GPU_TORCH", "torch"))
        session.install("-e", ".")
    for suite in GPU_SUITES:
        session.run("python", "-m", "harness.cli", "run", suite, "--device", "cuda", *GPU_ARGS.get(suite, []),
                    *session.posargs, env={"PYTHONPATH": "."})


@nox.session(name="bench-suite")
def bench_suite(session: nox.Session) -> None:
    """Suite expansion speed (100,000 cases) and the runner's memory over a long run of tiny cases."""
    _install(session)
    session.run("python", "benchmarks/suite_scale.py", *session.posargs)


@nox.session(name="bench-analysis")
def bench_analysis(session: nox.Session) -> None:
    """Analysis and the full report over 100,000 synthetic rows (target: under 30 s)."""
    _install(session)
    session.run("python", "benchmarks/analysis_speed.py", *session.posargs)


@nox.session(name="bench-stability")
def bench_stability(session: nox.Session) -> None:
    """Two complete runs of the ShuffleNet V2 G1/G2 probe and the quick suite with --processes: the share of
    cases agreeing within 3 %, moves flagged, wall time (add ``-- --hog`` for the contention check)."""
    _install(session)
    session.run("python", "benchmarks/stability.py", *session.posargs)


@nox.session(name="bench-shared-host")
def bench_shared_host(session: nox.Session) -> None:
    """The ShuffleNet V2 G1/G2 probe twice with --processes 3 on this host, then beside one CPU hog: rows
    stable in both runs and their agreement, blocks the canary rejected, interleaved finding ratios
    between the runs, and beside the hog the rows flagged and the findings confirmed or not."""
    _install(session)
    session.run("python", "benchmarks/stability.py", "--suites", "shufflenet-guidelines", "--processes", "3",
                "--hog", "--hogs", "1", *session.posargs)


@nox.session(name="bench-calibrate")
def bench_calibrate(session: nox.Session) -> None:
    """Calibrate fp32+bf16 from scratch into a throw-away store: the GEMM size sweeps, the per-level
    bandwidths, the wall time and peak RSS (budget: 60 s, 1 GiB largest buffer)."""
    _install(session)
    store = session.create_tmp()
    session.run("layerbench", "calibrate", "--dtype", "fp32,bf16", "--force", "--store", store, *session.posargs)
    session.run("layerbench", "devices", "--no-load", "--store", store)


@nox.session(name="bench-cli")
def bench_cli(session: nox.Session) -> None:
    """How fast ``layerbench`` starts: --help, --version, count (wall and CPU time, heavy imports); target 0.3 s."""
    _install(session)
    session.run("python", "benchmarks/cli_speed.py", *session.posargs)


@nox.session(name="bench-regress")
def bench_regress(session: nox.Session) -> None:
    """regress' false-positive rate on an unchanged build and its detection of a 15 % slowdown (synthetic
    nights seeded by the measured noise of results/reference/)."""
    _install(session)
    session.run("python", "benchmarks/regress_fp.py", *session.posargs)


@nox.session(name="bench-sweep")
def bench_sweep(session: nox.Session) -> None:
    """Where a sweep's time goes: warm-up + sampling share of the quick suite; per-case overhead (1,000 tiny cases)."""
    _install(session)
    session.run("python", "benchmarks/sweep_cost.py", *session.posargs)


@nox.session(name="bench-workers")
def bench_workers(session: nox.Session) -> None:
    """Worker start from the fork server and as a fresh interpreter (target: under 0.3 s), and the main job's
    measuring share with --processes 1 and 3 (targets: 85 % and 75 %); ``-- --checkout DIR`` for a before/after."""
    _install(session)
    session.run("python", "benchmarks/worker_start.py", *session.posargs)


@nox.session(name="bench-predict")
def bench_predict(session: nox.Session) -> None:
    """Held-out accuracy of the roofline and the efficiency model on this machine: ``layerbench fit``, then a
    fresh design and the quick suite predicted (MAPE, shares within +-10/20 % per family; 5-6 min on 2
    cores; ``-- --train RUNS --test RUNS`` evaluates stored runs instead, ``-- --threads 1`` on a shared host)."""
    _install(session)
    session.run("python", "benchmarks/predict_accuracy.py", *session.posargs)
