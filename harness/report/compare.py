"""``compare`` and ``regress`` as models (what the comparison found, computed once) and their text
renderers: ``table`` (people), ``markdown`` (a PR comment), ``json`` (CI) for a comparison; ``text``
for a regression check. The command line prints what these return and decides the exit status."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from harness.analysis.compare import (
    HOST,
    SET_ASIDE,
    TIMING_DIFFERS,
    UNJUDGED,
    FailOn,
    family_geomeans,
    mixed_passes,
)
from harness.analysis.findings import describe_row, pass_text
from harness.analysis.verdicts import set_aside_text
from harness.report.format import markdown_table
from harness.report.registry import renderer
from harness.units import percent, seconds

#: The columns a comparison shows, in order (those present).
COMPARE_COLUMNS = ["family", "case", "pass", "dtype", "time_a_s", "time_b_s", "ratio", "util_a", "util_b",
                   "stability_a", "stability_b", "verdict"]


@dataclass(frozen=True)
class CompareModel:
    """Two sets of runs case by case (``harness.analysis.compare``), with the ``--fail-on`` rules
    applied: ``failed`` holds the index of each case that crossed one; ``judged`` counts the cases
    with a verdict on both sides; ``families`` the geometric mean of B/A per family."""

    table: pd.DataFrame
    threshold: float
    rules: tuple[FailOn, ...] = ()
    only_changed: bool = False
    failed: frozenset[Any] = field(default_factory=frozenset)
    judged: int = 0
    families: pd.DataFrame = field(default_factory=pd.DataFrame)

    @classmethod
    def of(cls, table: pd.DataFrame, threshold: float, rules: tuple[FailOn, ...] = (),
           only_changed: bool = False) -> CompareModel:
        failed: set[Any] = set()
        for rule in rules if not table.empty else ():
            failed |= set(table.index[rule.crossed(table)])
        judged = 0 if table.empty else int((~table["verdict"].isin(UNJUDGED)).sum())
        return cls(table, threshold, tuple(rules), only_changed, frozenset(failed), judged, family_geomeans(table))

    @property
    def counts(self) -> dict[str, int]:
        return self.table["verdict"].value_counts().to_dict() if not self.table.empty else {}

    @property
    def shown(self) -> pd.DataFrame:
        """The cases listed: every case (or those with a verdict other than ``same``), slowest first."""
        t = self.table.assign(failed=[i in self.failed for i in self.table.index])
        t = t[t["verdict"] != "same"] if self.only_changed else t
        return t.sort_values("ratio", ascending=False)

    def head(self) -> list[str]:
        attrs = self.table.attrs
        out = [f"cross-device comparison: A = {attrs['a']}; B = {attrs['b']}"] if attrs.get("cross_device") else []
        return out + [f"note: {n}" for n in attrs.get("notes", [])]

    def tail(self) -> str:
        c = self.counts
        shown = ("slower", "faster", "same", *((HOST,) if c.get(HOST) else ()), SET_ASIDE,
                 *((TIMING_DIFFERS,) if c.get(TIMING_DIFFERS) else ()))
        return (f"B vs A over {len(self.table)} cases (threshold {percent(self.threshold, 0)}, beyond each side's "
                "noise band): " + ", ".join(f"{c.get(k, 0)} {k}" for k in shown))

    def set_aside_lines(self) -> list[str]:
        """The set-aside sentence of each side (``harness.analysis.verdicts.set_aside_text``)."""
        aside = self.table.attrs.get("set_aside", {})
        lines = [set_aside_text(aside.get(side, {}), f" of {side.upper()}") for side in ("a", "b")]
        return [line for line in lines if line]


def _view(m: CompareModel) -> pd.DataFrame:
    """The listed cases as a person reads them: each case named as the summary names it, times in
    automatic units, utilization in percent."""
    view = m.shown.copy()
    passes = mixed_passes(m.table)                                   # then a pass column says it
    view["case"] = [describe_row(r, with_pass=not passes) for _, r in view.iterrows()]    # k=1, 3, 5 told apart
    if passes:
        view["pass"] = [pass_text(r) or "forward" for _, r in view.iterrows()]
    else:
        view = view.drop(columns=["pass"], errors="ignore")
    for c in ("time_a_s", "time_b_s"):
        view[c] = view[c].map(seconds)
    for c in ("util_a", "util_b"):
        if c in view:
            bytes_side = view.get(f"{c}_bytes", pd.Series(False, index=view.index)).fillna(False).astype(bool)
            view[c] = [f"B/s {percent(v)}" if b and pd.notna(v) else percent(v) for v, b in zip(view[c], bytes_side)]
    view["ratio"] = view["ratio"].map(lambda v: f"{v:.3f}")
    view["verdict"] = [f"{v} (fail-on)" if f else v for v, f in zip(view["verdict"], view["failed"])]
    return view[[c for c in COMPARE_COLUMNS if c in view]]


def _families(m: CompareModel) -> pd.DataFrame:
    g = m.families
    return g.assign(geomean_ratio=g["geomean_ratio"].map(lambda v: f"{v:.3f}")) if not g.empty else g


@renderer(CompareModel, "table", text=True)
def compare_table(m: CompareModel) -> str:
    if m.table.empty:
        return "\n".join([*m.head(), "no case in common"]) + "\n"
    view, g = _view(m), _families(m)
    body = [view.to_string(index=False, na_rep="-") if not view.empty else "(no case changed)", "",
            "geometric mean of B/A per family:", g.to_string(index=False) if not g.empty else _no_family(m)]
    return "\n".join([*m.head(), *body, "", m.tail()]) + "\n"


def _no_family(m: CompareModel) -> str:
    """Why the geometric-mean table is empty: nothing judged on both sides, or only the host's changes."""
    return "(none: no case judged on both sides" + (" changed but by the host" if m.counts.get(HOST) else "") + ")"


@renderer(CompareModel, "markdown", text=True)
def compare_markdown(m: CompareModel) -> str:
    if m.table.empty:
        return "\n".join([*m.head(), "no case in common"]) + "\n"
    g = _families(m)
    body = [markdown_table(_view(m).fillna("-")), "", "Geometric mean of B/A per family:", "",
            markdown_table(g) if not g.empty else _no_family(m)]
    return "\n".join([*m.head(), *body, "", m.tail()]) + "\n"


@renderer(CompareModel, "json", text=True)
def compare_json(m: CompareModel) -> str:
    attrs = m.table.attrs
    doc = {"a": attrs.get("a"), "b": attrs.get("b"), "cross_device": bool(attrs.get("cross_device")),
           "notes": attrs.get("notes", []), "threshold": m.threshold, "fail_on": [str(r) for r in m.rules],
           "failed": len(m.failed), "judged": m.judged, "counts": m.counts,
           "stability": attrs.get("stability", {}), "set_aside": attrs.get("set_aside", {}),
           "families": json.loads(m.families.to_json(orient="records")),
           "cases": json.loads(m.shown.drop(columns=["config"], errors="ignore").to_json(orient="records"))}
    return json.dumps(doc, indent=2) + "\n"


@dataclass(frozen=True)
class RegressModel:
    """A nightly check (``harness.analysis.regressions``): the regressed cases (``bad``, with their
    ``attrs``), the baseline runs it was judged against and the rule it used."""

    bad: pd.DataFrame
    runs: int
    threshold: float
    budget: float

    @property
    def judged(self) -> int:
        return int(self.bad.attrs.get("judged", 0))

    @property
    def without_baseline(self) -> int:
        return int(self.bad.attrs.get("without_baseline", 0))

    @property
    def cases(self) -> int:
        """The new run's measured cases: judged, without a baseline, or set aside."""
        return self.judged + self.without_baseline + sum(self.bad.attrs.get("set_aside", {}).values())

    @property
    def basis(self) -> str:
        return (f"{self.threshold:.0%} and noise (false-positive budget {self.budget:g} per case and night; "
                "baseline: the nights since each case's last change point)")


@renderer(RegressModel, "text", text=True)
def regress_text(m: RegressModel) -> str:
    lines = []
    aside = set_aside_text(m.bad.attrs.get("set_aside", {}), " of the new run")
    if aside:
        lines.append(aside)
    if m.without_baseline:
        lines.append(f"{m.without_baseline} case(s) of NEW have no stable baseline in {m.runs} run(s): not judged")
    if not m.judged:
        return "\n".join(lines) + ("\n" if lines else "")
    host = m.bad.attrs.get("host")
    if host is not None and len(host):
        named = "; ".join(f"{describe_row(r)} {r['slowdown']:.2f}x with its canary {r['host_ratio']:.2f}x"
                          for _, r in host.head(5).iterrows())
        lines.append(f"{len(host)} case(s) slower by no more than the host canary beside them (one torch version and "
                     "settings): "
                     f"the host's, not regressions: {named}{' ...' if len(host) > 5 else ''}")
    if m.bad.empty:
        lines.append(f"no regression beyond {m.basis}: {m.judged} case(s) judged against {m.runs} baseline run(s)")
        return "\n".join(lines) + "\n"
    lines.append(f"{len(m.bad)} of {m.judged} judged case(s) slower than their baseline beyond {m.basis}:")
    shown = m.bad.copy()
    for c in ("time_median_s", "reference_s", "band_high_s"):
        shown[c] = shown[c].map(seconds)
    shown["slowdown"] = shown["slowdown"].map(lambda v: f"{v:.2f}x")
    for c in ("z", "z_limit"):
        shown[c] = shown[c].map(lambda v: f"{v:.1f}" if pd.notna(v) else "-")
    hidden = ["row_id", "config"] + ([] if mixed_passes(shown) else ["pass", "grads"])   # forward-only: as before
    lines.append(shown.drop(columns=hidden, errors="ignore").to_string(index=False, na_rep="-"))
    return "\n".join(lines) + "\n"
