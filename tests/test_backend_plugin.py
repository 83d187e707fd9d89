"""A new backend is one module: ``SimCpu`` below, defined here and nowhere in the package, times on
the host CPU under another device type and another name for its main memory. A suite runs on it
end to end (in this process and in worker processes), and what the rows store and the analysis
derives comes from the backend, never from a device string."""

from __future__ import annotations

import dataclasses

import pytest

from harness.analysis import derive, findings
from harness.backends import BUILTIN, Device, backend_types, get_backend, register
from harness.backends.cpu import CpuBackend
from harness.runner import run_suite
from harness.store import load_runs
from harness.suite import parse_suite


class SimCpu(CpuBackend):
    """The host CPU, as a device of type ``simcpu`` whose main memory is called ``LPDDR``."""

    type = "simcpu"
    main_memory = "LPDDR"

    def resolve(self, spec: str) -> Device:
        if spec not in ("simcpu", "simcpu:0"):
            from harness.errors import SpecError
            raise SpecError("device", spec, "simcpu")
        host = CpuBackend.resolve(self, "cpu")
        return dataclasses.replace(host, type=self.type, name="Simulated CPU", main_memory=self.main_memory,
                                   backend=self)


@pytest.fixture(scope="module", autouse=True)
def simcpu():
    if "simcpu" not in backend_types():
        register(SimCpu())
    yield get_backend("simcpu")


SUITE = {"name": "plugin", "devices": ["simcpu"], "budget_s": 0.05, "warmup_s": 0.0, "min_reps": 5,
         "sweep": [{"family": "groups", "layer": "conv2d", "input": "1x{c}x14x14",
                    "axes": {"c": [16, 32]}, "params": {"k": 3, "p": 1},
                    "derive": {"in": "c", "out": "c"}},
                   {"family": "relu", "layer": "relu", "input": "1x64x64x64"}]}


def stored_ceilings(store, device: Device) -> None:
    """Ceilings of the simulated device, as ``layerbench calibrate`` would store them: caches of
    32 KiB, 256 KiB and 1 MiB, then its main memory."""
    from harness.ceilings.calibrate import Ceiling, Ceilings, LevelCeiling, machine_key, save_ceilings
    levels = tuple(LevelCeiling(name, bw, size // 2, size, size, size, "sum", 1, 1e-3, 0.01, 10)
                   for name, bw, size in (("L1", 400e9, 2**15), ("L2", 200e9, 2**18), ("L3", 100e9, 2**20)))
    levels += (LevelCeiling("LPDDR", 20e9, 2**26, None, None, None, "copy", 1, 1e-2, 0.01, 10),)
    entries = (Ceiling("compute", "fp32", 100e9, 1024, 0.02, 0.01, 10, native=True),
               Ceiling("memory", "fp32", 20e9, 2**26, 0.01, 0.01, 10))
    save_ceilings(Ceilings(key=machine_key(device), measured_at="2026-12-02T00:00:00+0000", entries=entries,
                           levels=levels), store)


def test_the_backend_is_not_part_of_the_package():
    assert "simcpu" not in BUILTIN and "simcpu" in backend_types()


@pytest.mark.parametrize("processes", [1, 2])
def test_a_suite_runs_end_to_end_on_it(tmp_path, processes):
    suite = parse_suite(SUITE)            # the suite file names the new device type: it validates
    store = tmp_path / "ceilings"
    stored_ceilings(store, get_backend("simcpu").resolve("simcpu"))
    r = run_suite(suite, device="simcpu", out=tmp_path, progress=False, processes=processes, ceilings=store)
    assert r.statuses == {"ok": 3} and r.run_dir.name.startswith("plugin-simcpu-")
    loaded = load_runs(r.run_dir)
    f = loaded.frame
    assert set(f["device"]) == {"simcpu"} and set(f["device_type"]) == {"simcpu"}
    assert set(f["device_name"]) == {"Simulated CPU"} and set(f["main_memory"]) == {"LPDDR"}
    # the host CPU is named by the machine, whatever the device type is called
    assert set(f["device_label"]) == set(f["machine_name"])
    assert set(f["processes"]) == {processes}
    meta = loaded.runs[r.run_id]
    assert (meta.device, meta.device_type, meta.device_name) == ("simcpu", "simcpu", "Simulated CPU")
    assert set(f["ceiling_source"]) == {"measured"} and set(f["ceiling_bytes_s"]) == {20e9}
    d = derive(f)
    relu = d[d["layer"] == "relu"].iloc[0]
    # 1 MiB read + 1 MiB written outgrow the 1 MiB L3: the backend's main memory holds the set, after the
    # caches serve their 1 MiB (0.08 + 1.15 + 7.86 us); the other 1 MiB at 20 GB/s takes 52.43 us
    assert relu["roof_mem_level"] == "LPDDR" and relu["bytes_read"] + relu["bytes_written"] == 2**21
    assert relu["roof_level_bytes_s"] == pytest.approx(2**21 / 61.52192e-6)
    convs = d[d["layer"] == "conv2d"]
    assert set(convs["roof_mem_level"]) <= {"L2", "L3"}              # 25-100 KiB and 100-400 KiB sets
    for f_ in findings(d):
        assert f_.text.startswith(str(relu["machine_name"]))


def test_a_suite_naming_an_unknown_device_type_is_refused():
    from harness.suite import SuiteError
    with pytest.raises(SuiteError, match="devices"):
        parse_suite({**SUITE, "devices": ["tpu"]})
