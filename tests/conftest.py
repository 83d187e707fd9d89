"""Shared test helpers. CUDA tests carry the ``cuda`` marker and skip without a GPU."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _private_ceilings(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests never read or write the user's ceilings store (``~/.cache/layerbench/ceilings``): what
    another run calibrated on this machine must not change what a test sees."""
    import os
    old = os.environ.get("LAYERBENCH_CEILINGS")
    os.environ["LAYERBENCH_CEILINGS"] = str(tmp_path_factory.mktemp("ceilings"))
    # `layerbench run` in tests measures in its own process unless a test asks for --processes
    os.environ.setdefault("LAYERBENCH_PROCESSES", "1")
    yield
    if old is None:
        os.environ.pop("LAYERBENCH_CEILINGS", None)
    else:
        os.environ["LAYERBENCH_CEILINGS"] = old


@pytest.fixture(autouse=True)
def _quiet_calibration(monkeypatch: pytest.MonkeyPatch) -> None:
    """Calibration in tests sees a quiet host: on a shared machine other processes would otherwise
    keep ceilings from being stored (``harness.ceilings.calibrate.busy_since``; tested on its own)."""
    import harness.ceilings.calibrate
    monkeypatch.setattr(harness.ceilings.calibrate, "busy_since", lambda before: 0.0)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)
