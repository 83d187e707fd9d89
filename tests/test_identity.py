"""Machine identity: what machine_id and settings_id hash, and that a run is never resumed by
another machine."""

import dataclasses

import pytest

import harness.runner.context as context
from harness.devices.identity import describe_machine_identity, describe_threading
from harness.runner import run_suite
from harness.store import StoreError
from harness.suite import parse_suite


def test_machine_id_hashes_hardware_not_host():
    m = describe_machine_identity()
    assert len(m.machine_id) == 12 and m.machine_id == describe_machine_identity().machine_id
    assert m.cpu.logical_cpus >= 1 and m.cpu.flags and m.software.torch and m.threading.parallel_info
    assert dataclasses.replace(m, host="elsewhere").machine_id == m.machine_id
    zen1 = dataclasses.replace(m, cpu=dataclasses.replace(m.cpu, model=(m.cpu.model or 0) + 1))
    assert zen1.machine_id != m.machine_id                      # same brand string, another CPU model
    more = dataclasses.replace(m, cpu=dataclasses.replace(m.cpu, flags=(*m.cpu.flags, "amx_tile")))
    assert more.machine_id != m.machine_id
    assert m.name.startswith(m.cpu.brand or m.cpu.arch) and f"{m.cpu.logical_cpus} CPUs" in m.name
    doc = m.to_json()
    assert doc["machine_id"] == m.machine_id and doc["cpu"]["family"] == m.cpu.family


def test_settings_id_follows_threads_and_threading_environment(monkeypatch):
    base = describe_threading(2)
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    passive = describe_threading(2)
    assert ("OMP_WAIT_POLICY", "PASSIVE") in passive.env
    m = describe_machine_identity()
    ids = {dataclasses.replace(m, threading=t).settings_id for t in (base, passive, describe_threading(1))}
    assert len(ids) == 3


def test_resume_refuses_another_machine(tmp_path, monkeypatch):
    from test_runner import fake_measure
    s = parse_suite({"name": "t", "sweep": [{"layer": "relu", "input": "{b}x8", "axes": {"b": [1, 2, 3]}}]})
    calls = {"n": 0}

    def stop_after_one(fn, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return fake_measure()(fn, **kw)
    first = run_suite(s, out=tmp_path, measure_fn=stop_after_one, progress=False)
    assert first.interrupted
    real = context.describe_machine_identity

    def elsewhere(threads=None):
        m = real(threads)
        return dataclasses.replace(m, cpu=dataclasses.replace(m.cpu, model=(m.cpu.model or 0) + 7))
    monkeypatch.setattr(context, "describe_machine_identity", elsewhere)
    with pytest.raises(StoreError, match=f"started on machine {first.machine_id}.*start a new run"):
        run_suite(s, out=tmp_path, resume=True, measure_fn=fake_measure(), progress=False)
    monkeypatch.setattr(context, "describe_machine_identity", real)
    again = run_suite(s, out=tmp_path, resume=True, measure_fn=fake_measure(), progress=False)
    assert again.run_id == first.run_id and again.already_done == 1 and sum(again.statuses.values()) == 2
