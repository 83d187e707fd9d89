"""Suites: TOML files declaring sweeps over layer configurations, expanded into cases.

A sweep is axes (a cross product), zipped axes (varied together), constant parameters, derived
parameters (small bounded formulas over the axes) and optionally one axis *solved* so that a
quantity (e.g. ``c * c / g``, proportional to a conv's FLOPs) stays constant: an equal-FLOPs
family. Each point is crossed with memory formats and dtypes into ``Case``s. Invalid combinations
become cases with a ``skip`` reason, never dropped; a malformed file is refused before anything
runs (``load``). Format: docs/suites.md.
"""

from harness.suite.formula import FormulaError, compile_formula, evaluate, formula_names
from harness.suite.load import (
    MAX_CASES,
    MEMORY_FORMATS,
    OMP_WAIT,
    SOLVE_KEYS,
    SWEEP_KEYS,
    TOP_KEYS,
    SuiteError,
    builtin_dir,
    builtin_suites,
    load_suite,
    parse_passes,
    parse_suite,
)
from harness.suite.model import Case, Solve, Suite, Sweep, fill_template

__all__ = ["Case", "Suite", "Sweep", "Solve", "SuiteError", "load_suite", "parse_suite", "builtin_suites",
           "builtin_dir", "parse_passes", "compile_formula", "evaluate", "formula_names", "FormulaError",
           "fill_template", "MEMORY_FORMATS", "MAX_CASES", "TOP_KEYS", "SWEEP_KEYS", "SOLVE_KEYS", "OMP_WAIT"]
