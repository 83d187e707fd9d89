"""layerbench: how fast neural-network layers run, next to what the arithmetic says they should.

Pipeline: suite -> cases (``harness.spec``) -> analytic counts (``harness.count``) + timing
-> rows -> store -> analysis -> report.
"""

from harness.analytic.conventions import conventions, get_convention
from harness.count import count, totals
from harness.errors import CountError, LayerbenchError, SpecError
from harness.store import load_results
from harness.timing import Measurement, measure

__version__ = "0.1.0"
__all__ = ["count", "totals", "measure", "Measurement", "load_results", "conventions", "get_convention",
           "SpecError", "CountError", "LayerbenchError", "__version__"]
