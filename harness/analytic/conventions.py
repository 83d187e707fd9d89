"""Counting conventions: the canonical one and presets that reproduce other tools' totals.

A :class:`Convention` prices the recorded forward pass in one of two ways:

* **op-level** (canonical, ``flop_counter``, ``fvcore``): a formula per aten op;
* **module-level** (``thop``, ``ptflops``, ``torchinfo``, ``torchstat``): a rule per
  ``nn.Module`` class applied to each forward call of such a module, the way those tools
  hook modules; ops outside a priced module fall back to the op registry, ops inside one
  to ``inside_ops`` (``ptflops`` prices its patched functionals there too, which is how
  it counts an ``nn.ReLU`` twice).

A module call's cost is put on the first row it dispatched (or on a row of its own when it
dispatched none), so every convention yields the same per-op table shape and the same
totals function.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from torch import nn

from harness.analytic import backward_formulas  # noqa: F401  (registers the backward ops into CANONICAL)
from harness.analytic.canonical import CANONICAL
from harness.analytic.counter import ModuleCall, OpRecord, RawCall
from harness.analytic.registry import Cost, FormulaRegistry

ModuleRule = Callable[[ModuleCall], "Cost | None"]


@dataclass(frozen=True)
class Convention:
    """How one tool counts.

    Args:
        name: the ``convention=`` value.
        description: one line for the docs.
        headline: which column holds the number the tool reports (``"flops"`` or ``"macs"``).
        ops: op-level formulas (module-level conventions: for ops outside priced modules).
        inside_ops: formulas for ops that ran inside a priced module (default: they cost 0,
            the module's rule having priced its work).
        per_sample_modules: module rules' costs are divided by the batch size of the root
            module's first input (ptflops reports hooked modules "per image", functionals not).
        modules: module class -> rule (module-level conventions only).
        subclasses: rules also apply to subclasses (torchstat's ``isinstance``) instead of the
            exact class (thop's and ptflops' ``type(m) in mapping``).
        leaf_only: only leaf modules are priced (torchstat, torchinfo).
    """

    name: str
    description: str
    headline: str
    ops: FormulaRegistry
    modules: Mapping[type, ModuleRule] = field(default_factory=dict)
    subclasses: bool = False
    leaf_only: bool = False
    inside_ops: FormulaRegistry | None = None
    per_sample_modules: bool = False

    def _rule(self, module: nn.Module) -> ModuleRule | None:
        if self.subclasses:
            return next((r for cls, r in self.modules.items() if isinstance(module, cls)), None)
        return self.modules.get(type(module))

    def price(self, calls: Sequence[RawCall], module_calls: Sequence[ModuleCall]) -> list[OpRecord]:
        """Rows under this convention: one per dispatched op, plus one per leaf module call
        that dispatched nothing (Dropout in eval, Identity)."""
        op_costs = [self._op_cost(raw, self.ops) for raw in calls]
        priced = [(mc, rule) for mc in module_calls
                  if (rule := self._rule(mc.module)) is not None and (mc.is_leaf or not self.leaf_only)]
        divisor = _root_batch(module_calls) if self.per_sample_modules else 1
        inside = [False] * len(calls)
        extra: dict[int, Cost] = {}
        silent: list[tuple[ModuleCall, Cost | None]] = []
        for mc, rule in priced:
            for i in range(mc.start, mc.end):
                inside[i] = True
            cost = rule(mc)
            if cost is not None and divisor != 1:
                cost = Cost(cost.flops // divisor, cost.macs // divisor)
            if mc.start < mc.end:
                extra[mc.start] = _add(extra.get(mc.start), cost)
            else:
                silent.append((mc, cost))
        records = []
        for i, raw in enumerate(calls):
            cost, _ = op_costs[i]
            category = _category(raw)
            if inside[i]:  # the enclosing module's rule prices this work
                inner, _ = self._op_cost(raw, self.inside_ops) if self.inside_ops else (None, "")
                cost = inner or Cost(0, 0)
            if i in extra:
                cost = _add(cost, extra[i])
            records.append(OpRecord.of(raw, cost, category))
        for position, row in reversed(_silent_records(module_calls, silent)):
            records.insert(position, row)
        return records

    @staticmethod
    def _op_cost(raw: RawCall, registry: FormulaRegistry) -> tuple[Cost | None, str]:
        if raw.is_view:
            return Cost(0, 0), "view"
        entry = registry.lookup(raw.call.op)
        if entry is None:
            return None, "uncounted"
        return entry.formula(raw.call), entry.category


def _root_batch(module_calls: Sequence[ModuleCall]) -> int:
    root = next((mc for mc in module_calls if mc.path == ""), None)
    if root is None or not root.inputs or not root.inputs[0].shape:
        return 1
    return root.inputs[0].shape[0]


def _category(raw: RawCall) -> str:
    """The op family (canonical registry's), whatever convention prices it."""
    if raw.is_view:
        return "view"
    entry = CANONICAL.lookup(raw.call.op)
    return entry.category if entry is not None else "uncounted"


def _add(a: Cost | None, b: Cost | None) -> Cost | None:
    if a is None:
        return b
    if b is None:
        return a
    return Cost(a.flops + b.flops, a.macs + b.macs)


def _silent_records(module_calls: Sequence[ModuleCall],
                    priced: list[tuple[ModuleCall, Cost | None]]) -> list[tuple[int, OpRecord]]:
    """(position, row) for leaf modules whose forward dispatched no op (e.g. Dropout in eval)."""
    costs = {id(mc): cost for mc, cost in priced}
    return [(mc.start, OpRecord("(no op)", "none", mc.path, type(mc.module).__name__, mc.inputs,
                                mc.outputs, costs.get(id(mc)) or Cost(0, 0)))
            for mc in module_calls if mc.start == mc.end and mc.is_leaf and mc.path]


REGISTERED: dict[str, Convention] = {}


def register_convention(convention: Convention) -> Convention:
    if convention.name in REGISTERED:
        raise RuntimeError(f"duplicate convention {convention.name!r}")
    REGISTERED[convention.name] = convention
    return convention
