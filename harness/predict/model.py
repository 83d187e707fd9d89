"""The efficiency model of one machine, device and settings: per dtype, how far below its roofline
a layer runs, learned from stored rows of that machine.

Target (NeuSight's bounded form): ``log(time / predicted_roofline_s)``, the log of the inverse of
the fraction of the roof a row reaches. A prediction is ``predicted_roofline_s`` times its
exponential, so the model can only say how far *below* the roof a layer runs, never invent a time
from nothing; the fraction is capped at the largest fraction seen in training (x ``ROOF_SLACK``),
since a working set that fits a cache may beat the level it was assigned. Regressor:
scikit-learn's ``HistGradientBoostingRegressor`` on ``harness.predict.features`` (categorical
features coded by the vocabulary learned here). Held-out figures and the prediction interval come
from a K-fold cross-validation grouped by ``config_id`` (no layer in two folds): the interval is
the 5th to 95th percentile of the held-out log residuals (split-conformal).

The host's speed is taken out (``host_factor``): on a shared host the same layer ran 19 % faster in
one hour than in the one before, and its canary (``harness.timing.canary``) with it (log-log
correlation 0.72 over 155 layers). A row's time is scaled to the model's reference canary (the
median ``canary_s`` of its training rows) before it is learned, and a prediction for a measured row
is scaled back by that row's canary: the model learns the layer, the canary says the host. A layer
never measured is predicted at the reference speed.

Stored (``save``/``load``) as one JSON document: the machine, device and settings it belongs to,
the library versions, the run ids it learned from, the vocabulary, the held-out figures, and per
dtype the estimator in skops' format (base64, with its SHA-256). ``load`` refuses with one line
naming the file: text that is not JSON, NaN or an infinite number anywhere, a pickle, a skops
payload holding any type outside ``TRUSTED`` or a non-finite tree value, a digest that does not
match, and a model of another machine.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import math
import os
import platform
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd

import harness
from harness import record as R
from harness.errors import LayerbenchError, SpecError
from harness.predict.features import CATEGORICAL, FEATURES, features, implementation, regimes
from harness.predict.roofline import num, roofline
from harness.record import now_iso

FORMAT = "layerbench.efficiency-model"
#: 2: fractions of the roofline whose caches inside a working set's level serve their share first
#: (``harness.predict.roofline.memory_roof``); 1 learned fractions of one level's bandwidth.
FORMAT_VERSION = 2
#: What an older format version learned, said when its file is refused.
OLDER = {1: "its fractions are of the earlier roofline, each working set at the bandwidth of the one level "
            "that holds it"}
#: The only types a stored estimator may hold besides skops' defaults (what a fitted
#: HistGradientBoostingRegressor is made of); anything else is refused unread.
TRUSTED = ("functools.partial", "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
           "sklearn.utils.validation.check_array")
#: Largest model file read (bytes).
MAX_BYTES = 64 * 2**20
#: The predicted fraction of the roof is capped at the largest seen in training times this.
ROOF_SLACK = 1.1
#: Folds of the cross-validation (fewer when there are fewer distinct layers).
FOLDS = 5
#: The prediction interval: these quantiles of the held-out log residuals.
INTERVAL = (0.05, 0.95)
#: A group (dtype) needs this many rows to be fitted.
MIN_ROWS = 8
#: Which columns of the feature matrix are categorical (the regressor's ``categorical_features``).
CATEGORICAL_MASK = tuple(name in CATEGORICAL for name in FEATURES)
#: What ran, filled in for rows that never ran (``impute``).
WHAT_RAN = (R.KERNELS, R.ONEDNN_PRIMITIVES, R.KERNEL_LAUNCHES, R.ONEDNN_REORDERS)


class ModelFileError(LayerbenchError, ValueError):
    """A model file that cannot be used: one line naming the file and why."""

    def __init__(self, path: str | Path, why: str) -> None:
        super().__init__(f"{path}: {' '.join(str(why).split())}")


@functools.cache
def libraries() -> SimpleNamespace:
    """scikit-learn, skops and threadpoolctl, imported on first use with ``os.environ`` kept as it was:
    scikit-learn sets ``KMP_DUPLICATE_LIB_OK`` and ``KMP_INIT_AT_FORK`` when first imported, and
    ``KMP_`` variables are hashed into ``settings_id`` (``harness.devices.identity``): a process that
    fitted or read a model would otherwise describe itself as other settings (a fit's second pass,
    a prediction's target)."""
    saved = dict(os.environ)
    try:
        import sklearn  # deferred: scikit-learn only when a model is fitted, stored or read
        import skops  # deferred: skops only when a model is fitted, stored or read
        import skops.io  # deferred: as above
        from sklearn.ensemble import HistGradientBoostingRegressor  # deferred: as above
        from sklearn.model_selection import GroupKFold  # deferred: as above
        from threadpoolctl import threadpool_limits  # deferred: scikit-learn's dependency, as above
    finally:
        for k in set(os.environ) - set(saved):
            del os.environ[k]
        os.environ.update(saved)
    return SimpleNamespace(sklearn=sklearn, skops=skops, sio=skops.io, HGB=HistGradientBoostingRegressor,
                           GroupKFold=GroupKFold, threadpool_limits=threadpool_limits)


def regressor(n_rows: int, categorical: Sequence[bool]) -> Any:
    """The estimator: a histogram gradient-boosted tree ensemble sized for a few hundred rows."""
    return libraries().HGB(
        learning_rate=0.05, max_iter=400, max_leaf_nodes=15, min_samples_leaf=max(3, min(15, n_rows // 30)),
        l2_regularization=0.5, early_stopping=False, categorical_features=list(categorical), random_state=0)


def one_thread() -> Any:
    """A context in which scikit-learn's OpenMP loops run on one thread: a few hundred rows gain
    nothing from more, and on a busy host (the machine that is being measured) two OpenMP threads
    made one fit 20x slower (36 s against 1.6 s, load average 4 on 2 cores)."""
    return libraries().threadpool_limits(1, user_api="openmp")


def train(x: np.ndarray, y: np.ndarray) -> Any:
    """The regressor fitted on ``x``, ``y``. A feature no training row has (all missing) is set to 0
    for fitting: the trees never split on it, and the binning needs one value."""
    x = x.copy()
    x[:, np.isnan(x).all(axis=0)] = 0.0
    with one_thread():
        return regressor(len(x), CATEGORICAL_MASK).fit(x, y)


@dataclass(frozen=True)
class Fitted:
    """The model of one dtype (and pass, where rows have one).

    Attributes:
        key: (column, value) pairs its rows share (``(("dtype", "fp32"),)``).
        estimator: the fitted regressor (log of time over roofline time).
        rows: training rows; configs: distinct layer configurations among them.
        fraction_max: largest predicted fraction of the roof (the cap).
        interval: held-out log-residual quantiles (``INTERVAL``): the prediction interval's factors.
        heldout: the cross-validation's figures: ``median_error``, ``mape``, ``within_10``,
            ``within_20`` of the model and ``roofline_median_error``, ... of the roofline alone.
    """

    key: tuple[tuple[str, str], ...]
    estimator: Any
    rows: int
    configs: int
    fraction_max: float
    interval: tuple[float, float]
    heldout: dict[str, float]

    @property
    def label(self) -> str:
        return " ".join(v for _, v in self.key)


@dataclass(frozen=True)
class EfficiencyModel:
    """The efficiency model of one machine, device type and settings (every dtype it was fitted on)."""

    machine_id: str
    machine_name: str
    device_type: str
    device_name: str
    settings_id: str
    threads: int | None
    runs: tuple[str, ...]
    created: str
    versions: dict[str, str]
    vocab: dict[str, list[str]]
    fill: dict[str, dict[str, Any]]
    roofs: dict[str, dict[str, Any]]
    groups: tuple[Fitted, ...]
    #: The reference canary (seconds per step): the median ``canary_s`` of the training rows, the host
    #: speed predictions are made at (``None``: rows without a canary; no scaling).
    canary_s: float | None = None
    source: str | None = field(default=None, compare=False)

    @property
    def rows(self) -> int:
        return sum(g.rows for g in self.groups)

    def group(self, key: Mapping[str, Any]) -> Fitted | None:
        """The fitted group whose key values equal those of ``key``."""
        return next((g for g in self.groups
                     if all(str(key.get(k) if key.get(k) is not None else KEY_DEFAULTS.get(k)) == v for k, v in g.key)),
                    None)

    def describe(self) -> str:
        return (f"{self.machine_name} [{self.machine_id}], {self.device_type}, settings {self.settings_id}: "
                + ", ".join(f"{g.label} on {g.rows} rows" for g in self.groups))

    def predict(self, frame: pd.DataFrame, *, impute: bool = False) -> pd.DataFrame:
        """``predicted_s`` with its interval (``predicted_low_s``, ``predicted_high_s``), the predicted
        fraction of the roof (``predicted_fraction``), ``predicted_roofline_s`` and ``predicted_bound``
        of the rows of ``frame`` this model covers (its machine, device type, settings and a fitted
        group); NaN elsewhere. ``impute``: fill in what ran (``impute``) where a row did not run."""
        rows = self.impute(frame) if impute else frame
        roof = roofline(rows)
        out = pd.DataFrame({"predicted_s": np.nan, "predicted_low_s": np.nan, "predicted_high_s": np.nan,
                            "predicted_fraction": np.nan}, index=frame.index)
        out["predicted_roofline_s"], out["predicted_bound"] = roof["predicted_roofline_s"], roof["predicted_bound"]
        mine = self.covers(rows) & roof["predicted_roofline_s"].gt(0)
        if not mine.any():
            return out
        feats = features(rows[mine], roof[mine])
        for g in self.groups:
            sel = mine & _in_group(rows, g.key)
            if not sel.any():
                continue
            x = encode(feats.loc[sel[sel].index], self.vocab)
            with one_thread():
                y = np.maximum(g.estimator.predict(x), -math.log(g.fraction_max))
            host = host_factor(rows[sel], self.canary_s)
            t = roof.loc[sel, "predicted_roofline_s"].to_numpy() * np.exp(y) * host
            out.loc[sel, "predicted_s"] = t
            out.loc[sel, "predicted_low_s"] = t * math.exp(g.interval[0])
            out.loc[sel, "predicted_high_s"] = t * math.exp(g.interval[1])
            out.loc[sel, "predicted_fraction"] = np.exp(-y) / host      # of the roof, at the row's host speed
        return out

    def covers(self, frame: pd.DataFrame) -> pd.Series:
        """Rows of this model's machine, device type and settings (columns a frame lacks do not exclude)."""
        ok = pd.Series(True, index=frame.index)
        for col, want in ((R.MACHINE_ID, self.machine_id), (R.DEVICE_TYPE, self.device_type),
                          (R.SETTINGS_ID, self.settings_id)):
            if col in frame:
                ok &= frame[col].astype(str).eq(want)
        return ok

    def impute(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``frame`` with what ran (kernels, oneDNN primitives, launches, reorders) filled in where a row
        has none, from the training rows of its most specific regime seen (``features.regimes``), else
        its layer kind."""
        f = frame.copy()
        for c in WHAT_RAN:
            if c not in f:
                f[c] = None
            f[c] = f[c].astype(object)
        for idx, row in f.iterrows():
            if isinstance(row.get(R.KERNELS), str) and row.get(R.KERNELS):
                continue
            keys = [*regimes(row), f"layer:{row.get(R.LAYER)}"]
            fill = next((self.fill[k] for k in keys if k in self.fill), None)
            if fill:
                for c in WHAT_RAN:
                    f.at[idx, c] = fill.get(c)
        return f


#: A key column's value where a row or a case stores none: a row without ``pass`` is a forward pass.
KEY_DEFAULTS = {"pass": "forward"}


def _in_group(frame: pd.DataFrame, key: Iterable[tuple[str, str]]) -> pd.Series:
    ok = pd.Series(True, index=frame.index)
    for col, value in key:
        if col in frame:
            ok &= frame[col].fillna(KEY_DEFAULTS.get(col, "")).astype(str).eq(value)
        else:
            ok &= KEY_DEFAULTS.get(col) == value
    return ok


def encode(feats: pd.DataFrame, vocab: Mapping[str, Sequence[str]]) -> np.ndarray:
    """The feature matrix: numeric features as they are, categorical ones as their index in ``vocab``
    (NaN, the regressor's missing value, for a word it never saw)."""
    cols = []
    for name in FEATURES:
        if name in CATEGORICAL:
            index = {w: i for i, w in enumerate(vocab.get(name, ()))}
            cols.append(feats[name].map(lambda v, index=index: index.get(v, np.nan) if isinstance(v, str)
                                        else np.nan).astype(float).to_numpy())
        else:
            cols.append(pd.to_numeric(feats[name], errors="coerce").astype(float).to_numpy())
    x = np.column_stack(cols) if cols else np.empty((len(feats), 0))
    x[~np.isfinite(x)] = np.nan
    return x



# --- fitting ----------------------------------------------------------------------------------------------

def canary_reference(rows: pd.DataFrame) -> float | None:
    """The median ``canary_s`` of ``rows`` that have one (seconds per canary step), else ``None``."""
    c = num(rows, R.CANARY) if R.CANARY in rows else pd.Series(dtype=float)
    c = c[np.isfinite(c) & (c > 0)]
    return float(c.median()) if len(c) else None


def host_factor(rows: pd.DataFrame, reference: float | None) -> np.ndarray:
    """How much slower the host ran beside each row than at ``reference``: its ``canary_s`` over the
    reference (1 where either is missing). Rows a model covers share its settings, threads
    included, so their canaries (sized by the threads: ``canary.shape``) are comparable."""
    out = np.ones(len(rows))
    if reference is None or reference <= 0 or R.CANARY not in rows:
        return out
    c = num(rows, R.CANARY).to_numpy(dtype=float)
    ok = np.isfinite(c) & (c > 0)
    out[ok] = c[ok] / reference
    return out


def training_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows a model may learn from: measured (``ok``), with a time and a roofline above zero; the rows
    set aside as not stable are left out when at least half the rows (and ``MIN_ROWS``) remain."""
    f = frame[frame[R.STATUS].astype(str).eq("ok")] if R.STATUS in frame else frame
    t = num(f, R.TIME_MEDIAN)
    roof = roofline(f)["predicted_roofline_s"]
    f = f[(t > 0) & (roof > 0) & np.isfinite(t) & np.isfinite(roof)]
    if R.STABILITY in f:
        judged = f[f[R.STABILITY].isna() | f[R.STABILITY].astype(str).eq("stable")]
        if len(judged) >= max(MIN_ROWS, len(f) // 2):
            return judged
    return f


def group_keys(frame: pd.DataFrame) -> list[str]:
    """The columns a model is split by within one machine: dtype, and pass where rows store one."""
    return [R.DTYPE] + (["pass"] if "pass" in frame else [])


def one_of(frame: pd.DataFrame, col: str, what: str) -> str:
    values = sorted(frame[col].dropna().astype(str).unique()) if col in frame else []
    if len(values) != 1:
        raise SpecError(col, values, f"rows of one {what} (fit one model per {what})")
    return values[0]


def cross_validate(rows: pd.DataFrame, folds: int = FOLDS, vocab: Mapping[str, Sequence[str]] | None = None,
                   canary: float | None = None) -> pd.DataFrame:
    """Held-out predictions of every row of one group: K folds grouped by ``config_id`` (a layer is
    never in the fold that predicts it). Columns ``log_ratio`` (measured over roofline, at the
    ``canary`` reference speed: ``host_factor``), ``log_predicted`` (the fold model's),
    ``predicted_s`` (at the row's host speed), ``roofline_s`` and ``time_s``."""
    vocab = vocabulary(rows) if vocab is None else vocab
    roof = roofline(rows)
    x = encode(features(rows, roof), vocab)
    t = num(rows, R.TIME_MEDIAN).to_numpy()
    r = roof["predicted_roofline_s"].to_numpy()
    host = host_factor(rows, canary)
    y = np.log(t / host / r)
    groups = rows[R.CONFIG_ID].astype(str).to_numpy() if R.CONFIG_ID in rows else np.arange(len(rows)).astype(str)
    k = min(folds, len(set(groups)))
    pred = np.full(len(rows), np.nan)
    if k >= 2:
        for learn, test in libraries().GroupKFold(n_splits=k).split(x, y, groups):
            est = train(x[learn], y[learn])
            cap = -math.log(max(1.0, float(np.exp(-y[learn]).max())) * ROOF_SLACK)
            with one_thread():
                pred[test] = np.maximum(est.predict(x[test]), cap)
    return pd.DataFrame({"log_ratio": y, "log_predicted": pred, "predicted_s": r * np.exp(pred) * host,
                         "roofline_s": r, "time_s": t}, index=rows.index)


def accuracy(predicted: np.ndarray | pd.Series, measured: np.ndarray | pd.Series) -> dict[str, float]:
    """``median_error``, ``mape`` (fractions of the measured time), ``within_10``, ``within_20``
    (shares of rows) and ``rows`` of predictions against measured times (NaN predictions left out)."""
    p, m = np.asarray(predicted, dtype=float), np.asarray(measured, dtype=float)
    keep = np.isfinite(p) & np.isfinite(m) & (m > 0)
    err = np.abs(p[keep] - m[keep]) / m[keep]
    if not len(err):
        return {"rows": 0.0, "median_error": math.nan, "mape": math.nan, "within_10": math.nan,
                "within_20": math.nan}
    return {"rows": float(len(err)), "median_error": float(np.median(err)), "mape": float(np.mean(err)),
            "within_10": float(np.mean(err <= 0.10)), "within_20": float(np.mean(err <= 0.20))}


def vocabulary(rows: pd.DataFrame) -> dict[str, list[str]]:
    feats = features(rows)
    return {name: sorted({str(v) for v in feats[name].dropna()}) for name in CATEGORICAL}


def what_ran_fill(rows: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per regime (and per layer kind, ``layer:<kind>``), what ran most often among ``rows``: the
    values ``EfficiencyModel.impute`` fills in for a layer that never ran."""
    out: dict[str, dict[str, Any]] = {}
    ran = rows[rows[R.KERNELS].notna()] if R.KERNELS in rows else rows.iloc[:0]
    levels = [regimes(r) + [f"layer:{r.get(R.LAYER)}"] for _, r in ran.iterrows()]
    for depth in range(max((len(k) for k in levels), default=0)):
        keys = pd.Series([k[min(depth, len(k) - 1)] for k in levels], index=ran.index, dtype=object)
        for key, g in ran.groupby(keys):
            if key in out:
                continue
            impl = pd.Series([implementation(r) for _, r in g.iterrows()], index=g.index)
            top = g.loc[impl == impl.mode().iloc[0]].iloc[0]
            out[str(key)] = {R.KERNELS: top.get(R.KERNELS),
                             R.ONEDNN_PRIMITIVES: _plain(top.get(R.ONEDNN_PRIMITIVES)),
                             R.KERNEL_LAUNCHES: _median(g, R.KERNEL_LAUNCHES),
                             R.ONEDNN_REORDERS: _median(g, R.ONEDNN_REORDERS)}
    return out


def _plain(v: Any) -> Any:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def _median(g: pd.DataFrame, col: str) -> int | None:
    v = num(g, col).dropna()
    return int(round(float(v.median()))) if len(v) else None


ROOF_COLUMNS = (R.PEAK_DTYPE, R.CEILING_FLOPS, R.CEILING_BYTES, R.CEILING_LEVELS, R.LAUNCH_OVERHEAD, R.PEAK_FLOPS,
                R.PEAK_BYTES, R.MAIN_MEMORY, "ceiling_id")


def _roofs(rows: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per dtype, the roofs the training rows stored (the latest ``ceiling_id``): what ``transfer`` scales from."""
    out: dict[str, dict[str, Any]] = {}
    for dtype, g in rows.groupby(R.DTYPE):
        last = g.sort_values(R.TIMESTAMP).iloc[-1] if R.TIMESTAMP in g else g.iloc[-1]
        out[str(dtype)] = {c: _finite(last.get(c)) for c in ROOF_COLUMNS if c in g}
    return out


def _finite(v: Any) -> Any:
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(v) else None
    if isinstance(v, np.integer):
        return int(v)
    return v


def fit(frame: pd.DataFrame, *, folds: int = FOLDS, min_rows: int = MIN_ROWS) -> EfficiencyModel:
    """Fit the efficiency model of the rows of one machine, device type and settings (``SpecError``
    naming the column when they span several, or when no dtype has ``min_rows`` usable rows)."""
    rows = training_rows(frame)
    if rows.empty:
        raise SpecError("rows", len(frame), "measured rows with counts and a stored roof (ceilings or peaks)")
    machine = one_of(rows, R.MACHINE_ID, "machine")
    device = one_of(rows, R.DEVICE_TYPE, "device type")
    settings = one_of(rows, R.SETTINGS_ID, "settings (threads, affinity, threading variables)")
    vocab = vocabulary(rows)
    keys = group_keys(rows)
    canary = canary_reference(rows)
    groups = []
    for key, g in rows.groupby(keys, sort=True):
        if len(g) < min_rows:
            continue
        key = key if isinstance(key, tuple) else (key,)
        groups.append(_fit_group(tuple((k, str(v)) for k, v in zip(keys, key)), g, folds, vocab, canary))
    if not groups:
        raise SpecError("rows", len(rows), f"at least {min_rows} usable rows of one dtype")
    threads = num(rows, R.THREADS).dropna()
    return EfficiencyModel(
        machine_id=machine, machine_name=str(rows[R.MACHINE_NAME].iloc[0]) if R.MACHINE_NAME in rows else machine,
        device_type=device, device_name=str(rows[R.DEVICE_NAME].iloc[0]) if R.DEVICE_NAME in rows else device,
        settings_id=settings, threads=int(threads.mode().iloc[0]) if len(threads) else None,
        runs=tuple(sorted(rows[R.RUN_ID].astype(str).unique())) if R.RUN_ID in rows else (),
        created=now_iso(), versions=versions(rows), vocab=vocab, fill=what_ran_fill(rows), roofs=_roofs(rows),
        groups=tuple(groups), canary_s=canary)


def _fit_group(key: tuple[tuple[str, str], ...], rows: pd.DataFrame, folds: int,
               vocab: Mapping[str, Sequence[str]], canary: float | None = None) -> Fitted:
    cv = cross_validate(rows, folds, vocab, canary)
    x = encode(features(rows), vocab)
    y = cv["log_ratio"].to_numpy()
    est = train(x, y)
    resid = (cv["log_ratio"] - cv["log_predicted"]).dropna()
    lo, hi = (float(resid.quantile(INTERVAL[0])), float(resid.quantile(INTERVAL[1]))) if len(resid) else (0.0, 0.0)
    model = accuracy(cv["predicted_s"], cv["time_s"])
    roof = accuracy(cv["roofline_s"], cv["time_s"])
    heldout = {**model, **{f"roofline_{k}": v for k, v in roof.items() if k != "rows"}}
    heldout = {k: (round(v, 6) if math.isfinite(v) else None) for k, v in heldout.items()}
    return Fitted(key=key, estimator=est, rows=len(rows), configs=int(rows[R.CONFIG_ID].nunique())
                  if R.CONFIG_ID in rows else len(rows),
                  fraction_max=max(1.0, float(np.exp(-y).max())) * ROOF_SLACK, interval=(min(lo, 0.0), max(hi, 0.0)),
                  heldout=heldout)


def versions(rows: pd.DataFrame | None = None) -> dict[str, str]:
    """The library versions a model was fitted with (and the torch its rows were measured with)."""
    lib = libraries()
    out = {"layerbench": harness.__version__, "scikit-learn": lib.sklearn.__version__, "skops": lib.skops.__version__,
           "numpy": np.__version__, "python": platform.python_version()}
    if rows is not None and R.TORCH_VERSION in rows and rows[R.TORCH_VERSION].notna().any():
        out["torch"] = str(rows[R.TORCH_VERSION].dropna().mode().iloc[0])
    return out


# --- storing and reading ------------------------------------------------------------------------------------

def to_json(model: EfficiencyModel) -> dict[str, Any]:
    """The stored form: metadata and, per group, the estimator in skops' format (base64 + SHA-256)."""
    sio = libraries().sio
    groups = []
    for g in model.groups:
        blob = sio.dumps(g.estimator, compression=zipfile.ZIP_DEFLATED)
        groups.append({"key": dict(g.key), "rows": g.rows, "configs": g.configs, "fraction_max": g.fraction_max,
                       "interval": list(g.interval), "heldout": g.heldout,
                       "estimator": {"format": "skops", "sha256": hashlib.sha256(blob).hexdigest(),
                                     "data": base64.b64encode(blob).decode("ascii")}})
    return {"format": FORMAT, "version": FORMAT_VERSION, "machine_id": model.machine_id,
            "machine_name": model.machine_name, "device_type": model.device_type, "device_name": model.device_name,
            "settings_id": model.settings_id, "threads": model.threads, "runs": list(model.runs),
            "created": model.created, "versions": model.versions, "features": list(FEATURES),
            "vocab": model.vocab, "fill": model.fill, "roofs": model.roofs, "canary_s": model.canary_s,
            "groups": groups}


def save(model: EfficiencyModel, path: str | Path) -> Path:
    """Write ``model`` to ``path`` (atomically: a temporary file renamed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(to_json(model), indent=1, allow_nan=False, default=_finite)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text + "\n")
    tmp.replace(path)
    return path


def _no_constant(word: str) -> Any:
    raise ValueError(f"{word} where a number belongs")


def _check_finite(v: Any, where: str = "") -> None:
    if isinstance(v, float) and not math.isfinite(v):
        raise ValueError(f"an infinite number at {where or 'the top'}")
    if isinstance(v, dict):
        for k, x in v.items():
            _check_finite(x, f"{where}.{k}" if where else str(k))
    elif isinstance(v, list):
        for i, x in enumerate(v):
            _check_finite(x, f"{where}[{i}]")


def _need(d: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str = "") -> Any:
    v = d.get(key)
    if not isinstance(v, kind) or isinstance(v, bool) and kind is not bool:
        raise ValueError(f"{where}{key}: expected {getattr(kind, '__name__', kind)}, got {type(v).__name__}")
    return v


def load(path: str | Path, *, machine_id: str | None = None) -> EfficiencyModel:
    """Read a stored model; ``ModelFileError`` (one line naming the file) for anything unusable
    (module docstring), or when ``machine_id`` is given and the model belongs to another machine."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_BYTES:
            raise ModelFileError(path, f"larger than {MAX_BYTES // 2**20} MiB: not a layerbench model")
        data = path.read_bytes()
    except OSError as e:
        raise ModelFileError(path, f"cannot be read ({e.strerror or e})") from None
    if data[:1] == b"\x80" or data[:2] in (b"(d", b"(l", b"}q", b"]q", b"(i", b"cc"):
        raise ModelFileError(path, "a pickle, not a layerbench model: refused unread (a pickle runs code when read)")
    if data[:2] == b"PK":
        raise ModelFileError(path, "a zip/skops archive alone, not a layerbench model (JSON with its metadata)")
    try:
        doc = json.loads(data.decode("utf-8"), parse_constant=_no_constant)
        _check_finite(doc)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ModelFileError(path, f"not a layerbench model: {str(e)[:160]}") from None
    try:
        return _from_json(doc, path, machine_id)
    except ModelFileError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, IndexError) as e:
        raise ModelFileError(path, f"not a usable layerbench model: {str(e)[:160]}") from None


def _from_json(doc: Any, path: Path, machine_id: str | None) -> EfficiencyModel:
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ModelFileError(path, f"not a layerbench model (expected \"format\": \"{FORMAT}\")")
    if doc.get("version") != FORMAT_VERSION:
        why = OLDER.get(doc.get("version")) if isinstance(doc.get("version"), int) else None
        raise ModelFileError(path, f"model format version {doc.get('version')!r}; this layerbench reads "
                                   f"{FORMAT_VERSION}{f' ({why})' if why else ''}: fit it again (layerbench fit)")
    mid = _need(doc, "machine_id", str)
    if machine_id is not None and mid != machine_id:
        raise ModelFileError(path, f"a model of machine {mid} ({doc.get('machine_name')}), not of {machine_id}: "
                                   "fit one on that machine (layerbench fit)")
    if list(_need(doc, "features", list)) != list(FEATURES):
        raise ModelFileError(path, "fitted on other features than this layerbench computes: fit it again")
    vocab = {k: [str(w) for w in _need(_need(doc, "vocab", dict), k, list, "vocab.")] for k in CATEGORICAL}
    groups = tuple(_group(g, path, i) for i, g in enumerate(_need(doc, "groups", list)))
    if not groups:
        raise ModelFileError(path, "holds no fitted group")
    threads = doc.get("threads")
    canary = doc.get("canary_s")
    if canary is not None and (isinstance(canary, bool) or not isinstance(canary, (int, float)) or canary <= 0):
        raise ModelFileError(path, f"\"canary_s\" is {canary!r}: expected a positive number of seconds or null")
    return EfficiencyModel(
        machine_id=mid, machine_name=str(doc.get("machine_name") or mid), device_type=_need(doc, "device_type", str),
        device_name=str(doc.get("device_name") or ""), settings_id=_need(doc, "settings_id", str),
        threads=threads if isinstance(threads, int) and not isinstance(threads, bool) else None,
        runs=tuple(str(r) for r in _need(doc, "runs", list)), created=str(doc.get("created") or ""),
        versions={str(k): str(v) for k, v in _need(doc, "versions", dict).items()}, vocab=vocab,
        fill={str(k): dict(v) for k, v in _need(doc, "fill", dict).items() if isinstance(v, dict)},
        roofs={str(k): dict(v) for k, v in _need(doc, "roofs", dict).items() if isinstance(v, dict)},
        groups=groups, canary_s=float(canary) if canary is not None else None, source=str(path))


def _group(g: Any, path: Path, i: int) -> Fitted:
    sio = libraries().sio
    if not isinstance(g, dict):
        raise ValueError(f"groups[{i}]: expected an object")
    where = f"groups[{i}]."
    est = _need(g, "estimator", dict, where)
    if est.get("format") != "skops":
        raise ModelFileError(path, f"{where}estimator: format {est.get('format')!r}, expected skops")
    try:
        blob = base64.b64decode(_need(est, "data", str, where), validate=True)
    except (ValueError, TypeError):
        raise ModelFileError(path, f"{where}estimator: data is not base64") from None
    if hashlib.sha256(blob).hexdigest() != est.get("sha256"):
        raise ModelFileError(path, f"{where}estimator: SHA-256 does not match its data (a changed file)")
    try:
        untrusted = sio.get_untrusted_types(data=blob)
    except Exception as e:  # noqa: BLE001 - any failure to read the archive's schema refuses the file
        raise ModelFileError(path, f"{where}estimator: not a skops archive ({type(e).__name__})") from None
    foreign = sorted(set(untrusted) - set(TRUSTED))
    if foreign:
        raise ModelFileError(path, f"{where}estimator: holds types outside the trusted set: {', '.join(foreign)[:160]}")
    try:
        estimator = sio.loads(blob, trusted=list(untrusted))
    except Exception as e:  # noqa: BLE001 - a corrupt payload refuses the file
        raise ModelFileError(path, f"{where}estimator: cannot be read ({type(e).__name__}: {str(e)[:80]})") from None
    _check_estimator(estimator, path, where)
    key = tuple((str(k), str(v)) for k, v in _need(g, "key", dict, where).items())
    interval = _need(g, "interval", list, where)
    fmax = float(_need(g, "fraction_max", (int, float), where))
    if len(interval) != 2 or not all(isinstance(v, (int, float)) for v in interval) or not fmax > 0:
        raise ValueError(f"{where}interval or fraction_max out of range")
    return Fitted(key=key, estimator=estimator, rows=int(_need(g, "rows", int, where)),
                  configs=int(g.get("configs") or 0), fraction_max=fmax,
                  interval=(float(interval[0]), float(interval[1])),
                  heldout={str(k): v for k, v in _need(g, "heldout", dict, where).items()})


def _check_estimator(est: Any, path: Path, where: str) -> None:
    """A HistGradientBoostingRegressor over ``FEATURES`` whose every tree value is finite."""
    if type(est) is not libraries().HGB:
        raise ModelFileError(path, f"{where}estimator: a {type(est).__name__}, expected a "
                                   "HistGradientBoostingRegressor")
    if getattr(est, "n_features_in_", None) != len(FEATURES):
        raise ModelFileError(path, f"{where}estimator: {getattr(est, 'n_features_in_', None)} features, expected "
                                   f"{len(FEATURES)}")
    values = [np.asarray(getattr(est, "_baseline_prediction", np.nan), dtype=float)]
    thresholds = []
    for stage in getattr(est, "_predictors", []):
        for tree in stage:
            values.append(np.asarray(tree.nodes["value"], dtype=float))
            thresholds.append(np.asarray(tree.nodes["num_threshold"], dtype=float))
    # a split that sends only missing values one way has an infinite threshold: NaN is never one
    if len(values) < 2 or not all(np.isfinite(v).all() for v in values) or any(np.isnan(t).any() for t in thresholds):
        raise ModelFileError(path, f"{where}estimator: NaN or infinite values in its trees")
