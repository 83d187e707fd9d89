"""Analysis of the result table (pure functions of DataFrames): derived metrics and the roofline
(``metrics``), the peaks rows are measured against (``peaks``), equal-FLOPs findings
(``findings``), comparisons, regressions and the cross-device view (``compare``), and the one
rule for which rows those verdicts use (``verdicts``)."""

from harness.analysis.compare import compare, cross_device, regressions
from harness.analysis.findings import Finding, equal_flops_groups, findings
from harness.analysis.metrics import derive
from harness.analysis.peaks import peak_table

__all__ = ["derive", "peak_table", "equal_flops_groups", "findings", "Finding", "compare", "regressions",
           "cross_device"]
