"""One case across nights and commits: the nightly series (``series``), change points and the
baseline a new night is judged against (``changepoints``), and the static HTML site (``site``)."""

from harness.history.changepoints import Baseline, baseline, change_points, noise
from harness.history.series import SERIES_KEY, nightly
from harness.history.site import SeriesSummary, build_site

__all__ = ["Baseline", "baseline", "change_points", "noise", "SERIES_KEY", "nightly", "SeriesSummary", "build_site"]
