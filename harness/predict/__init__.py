"""What the arithmetic predicts a row costs, and how far the machine falls from it.

Two predictions per row, both from stored columns only:

- ``predicted_roofline_s`` (``roofline``): the hierarchical roofline of the row's counts against
  the ceilings it stores: its dtype's GEMM ceiling, the bandwidth of the memory level its working
  set fits, and the launch/dispatch floor measured at calibration.
- ``predicted_s`` (``model``): that roofline divided by the fraction of it the machine reaches for
  such a layer, learned per machine, settings and dtype from stored rows of that machine
  (scikit-learn's HistGradientBoostingRegressor on the analytic features of ``features``; the
  target is the roofline's fraction, bounded by it, as NeuSight does). Stored as JSON with the
  estimator in skops' format (``store``), never a pickle.

``columns`` adds both (and ``residual`` = measured / predicted) to a derived table; ``cases``
predicts suites and layers never measured, on this machine or another whose ceilings are stored
(``transfer``: Habitat's scaling by op class where that machine has no model); ``sampling``
chooses where the ``fit`` suite measures more (nn-Meter's adaptive sampling); ``explain`` says
what a row's counts tell about a large residual. Importing this package loads none of
scikit-learn, skops or torch (``harness.analysis`` imports ``columns``).
"""
