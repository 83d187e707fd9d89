"""pytest plugin (entry point ``pytest11``): a layerbench suite as a pytest-benchmark session.

    pytest --layerbench-suite quick --benchmark-json out.json [--layerbench-device cpu] [--layerbench-dtype fp32]

runs each case of the suite (a built-in name or a ``.toml`` path) as one test through
pytest-benchmark's ``benchmark`` fixture (its calibrated rounds and host clock; on CUDA each call is
synchronised), each call on the next of the input sets ``layerbench run`` rotates (spanning twice the
last-level cache: the same inputs a run times; ``rotation`` in ``extra_info``), with ids naming
what tells the cases apart (family, layer, varying sweep values, layout, dtype) and the row
identity, counts and peaks in ``extra_info``; ``layerbench report``
reads the JSON back (``harness.store.pytest_bench``). Without ``--layerbench-suite`` the plugin only adds
its options: nothing else is imported (no torch) and no test is added.
"""

from __future__ import annotations

import dataclasses
import itertools
from enum import Enum
from pathlib import Path
from typing import Any

import pytest

from harness.errors import LayerbenchError

_OPTION = "layerbench_suite"
_DONE = pytest.StashKey[bool]()


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("layerbench", "layerbench suites through pytest-benchmark")
    g.addoption("--layerbench-suite", dest=_OPTION, default=None, metavar="NAME|FILE",
                help="run this layerbench suite (built-in name or .toml) instead of the collected tests")
    g.addoption("--layerbench-device", dest="layerbench_device", default=None,
                help="cpu or cuda[:N] (default: the suite's first device)")
    g.addoption("--layerbench-dtype", dest="layerbench_dtype", default=None,
                help="comma-separated dtypes replacing the suite's: fp32, fp16, bf16, fp64")


def pytest_configure(config: pytest.Config) -> None:
    """With ``--layerbench-suite``: load the suite (a bad one is a usage error, one line) and collect this
    module's ``test_layer`` only (one test per case)."""
    if config.getoption(_OPTION, None):
        try:
            config.stash[_SESSION] = _session(config)
        except LayerbenchError as e:
            raise pytest.UsageError(f"--layerbench-suite: {e}") from None
        config.args[:] = [str(Path(__file__).resolve())]


@dataclasses.dataclass(frozen=True)
class _Session:
    """What every case's test shares: the suite, the resolved device, the run context."""

    suite: Any
    device: str
    dtypes: list[str] | None


_SESSION = pytest.StashKey[_Session]()


def _session(config: pytest.Config) -> _Session:
    from harness.suite import load_suite  # deferred: idle without --layerbench-suite
    suite = load_suite(config.getoption(_OPTION))
    text = config.getoption("layerbench_dtype")
    from harness.layers.dtypes import canonical_dtype  # deferred: idle without --layerbench-suite
    dtypes = [canonical_dtype(d.strip(), "--layerbench-dtype") for d in text.split(",") if d.strip()] if text else None
    return _Session(suite, config.getoption("layerbench_device") or suite.devices[0], dtypes)


def case_id(case: Any, varying: dict[str, frozenset[str]]) -> str:
    """``groups-equal-flops conv2d c=128 g=4 nchw fp32``: what tells the case apart in its suite."""
    keep = varying.get(case.family, frozenset())
    coords = " ".join(f"{k}={v}" for k, v in case.axes if k in keep)
    return " ".join(str(x) for x in (case.family, case.layer, coords, case.memory_format, case.dtype) if x)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Free the timing inputs' pool (``harness.timing.inputs.POOL``) the suite's cases used."""
    if session.config.getoption(_OPTION, None):
        from harness.timing.inputs import POOL  # deferred: idle without --layerbench-suite
        POOL.clear()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # called twice for test_layer: as a plugin hook and as its module's own hook
    if metafunc.function is not test_layer or metafunc.definition.stash.get(_DONE, False):
        return
    metafunc.definition.stash[_DONE] = True
    from harness.backends import device_type  # deferred: idle without --layerbench-suite
    from harness.runner import work_items  # deferred: idle without --layerbench-suite
    from harness.runner.progress import varying_names  # deferred: idle without --layerbench-suite
    s = metafunc.config.stash[_SESSION]
    cases = list(work_items(s.suite, s.dtypes, (1, 1), device_type(s.device)))
    varying = varying_names(s.suite)
    metafunc.parametrize("layerbench_case", cases, ids=[case_id(c, varying) for c in cases])


@pytest.fixture(scope="session")
def layerbench_context(request: pytest.FixtureRequest) -> Any:
    """The run context of the session (machine identity, stored peaks; ceilings are not measured)."""
    from harness.backends import get_backend, resolve_device  # deferred: idle without --layerbench-suite
    from harness.record import run_stamp  # deferred: idle without --layerbench-suite
    from harness.runner import make_context  # deferred: idle without --layerbench-suite
    s = request.config.stash[_SESSION]
    if not get_backend(s.device).available():
        pytest.skip(f"--layerbench-device={s.device}: torch sees no such device")
    dtypes = s.dtypes or list(s.suite.dtypes)
    return make_context(s.suite, resolve_device(s.device), dtypes, None, "hot", (1, 1),
                        f"{s.suite.name}-pytest-benchmark-{run_stamp()}")


def test_layer(benchmark: Any, layerbench_case: Any, layerbench_context: Any) -> None:
    """One case of the suite, timed by pytest-benchmark; its row in ``extra_info``."""
    from harness.runner import analytic_counts, prepare_pass  # deferred: idle without --layerbench-suite
    from harness.timing import heap  # deferred: idle without --layerbench-suite
    case, ctx = layerbench_case, layerbench_context
    if case.skip:
        pytest.skip(case.skip)
    counts = analytic_counts(case)
    with ctx.backend.pass_scope(ctx.device, case.pass_):
        work, seed = prepare_pass(case, ctx.device, counts)     # a backward's forward graphs made here, untimed
        policy = heap.steady() if ctx.device.host else None     # the heap policy prepare_pass set, as a run's
        for part in (ctx.key(case), ctx.case_fields(case), counts, ctx.peaks_for(case, {}), ctx.provenance()):
            benchmark.extra_info.update({k: _plain(v) for k, v in dataclasses.asdict(part).items()})
        from harness.record import SCHEMA_VERSION  # deferred: idle without --layerbench-suite
        from harness.store.pytest_bench import PLUGIN_MARK  # deferred: idle without --layerbench-suite
        benchmark.extra_info.update({"seed": seed, "rotation": len(work.sets), "heap": policy,
                                     PLUGIN_MARK: SCHEMA_VERSION})
        sets = itertools.cycle(work.sets)     # the input sets (a backward's forward graphs) a run rotates

        def call() -> None:
            work.fn(*next(sets))
            ctx.backend.synchronize(ctx.device)

        with work.grad_mode():
            benchmark(call)


def _plain(v: Any) -> Any:
    if isinstance(v, Enum):
        return v.value
    return list(v) if isinstance(v, tuple) else v
