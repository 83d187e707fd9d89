"""A suite fanned out over a Ray cluster: one task per device, each writing its shard to the result
dataset (``harness.store.dataset``). ``plan`` (which tasks, with which Ray resources) is pure and needs no
Ray; ``run_on_ray`` submits the tasks and follows them. Ray is the optional extra ``fleet``."""

from harness.fleet.plan import FleetError, Node, Placement, plan
from harness.fleet.ray_suite import FleetSummary, ShardResult, ShardTask, run_on_ray, run_shard

__all__ = ["FleetError", "Node", "Placement", "plan", "FleetSummary", "ShardResult", "ShardTask", "run_on_ray",
           "run_shard"]
