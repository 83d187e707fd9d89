"""Machine identity: what machine_id and settings_id hash, and that a run is never resumed by
another machine."""

import dataclasses

import pytest
from fake_cuda import FakeGpu, FakeNode, FakeTorchCuda, fake_pynvml

import harness.runner.context as context
from harness.devices.gpu import describe_gpus
from harness.devices.identity import describe_machine_identity, describe_threading, gpu_ids
from harness.devices.nvml import Nvml
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


def test_machine_id_does_not_change_with_cuda_visible_devices():
    """Ray's num_gpus=1 shows a task one GPU of the node: the machine, its stored ceilings and its
    history stay the same (the masked GPU used to hash with no SM count)."""
    node = FakeNode([FakeGpu(uuid="GPU-aaaa-1"), FakeGpu(uuid="GPU-bbbb-2")])
    nvml = Nvml(fake_pynvml(node))
    base = describe_machine_identity()
    ids = set()
    for visible, seen in (("0,1", 2), ("1", 1), ("GPU-aaaa", 1), ("1,0", 2), ("GPU-bbbb,7,0", 1)):
        gpus = gpu_ids(describe_gpus(nvml, FakeTorchCuda(node.masked(visible))).gpus)
        assert len(gpus) == 2 and sum(g.visible for g in gpus) == seen      # each GPU once, seen by torch or not
        ids.add(dataclasses.replace(base, gpus=gpus).machine_id)
    assert len(ids) == 1
    h200 = FakeNode([FakeGpu(name="NVIDIA H200"), FakeGpu(name="NVIDIA H200")])
    gpus = gpu_ids(describe_gpus(Nvml(fake_pynvml(h200)), FakeTorchCuda(h200)).gpus)
    assert dataclasses.replace(base, gpus=gpus).machine_id not in ids          # other GPUs: another machine


def test_a_mig_instance_is_described_as_the_gpu_it_lives_on():
    node = FakeNode([FakeGpu(uuid="GPU-aaaa-1"), FakeGpu(uuid="GPU-cccc-3", mig=("MIG-dddd-4",))], visible=[1])
    gpus = describe_gpus(Nvml(fake_pynvml(node)), FakeTorchCuda(node)).gpus
    assert [(g.uuid, g.source) for g in gpus] == [("GPU-cccc-3", "nvml+torch"), ("GPU-aaaa-1", "nvml")]
