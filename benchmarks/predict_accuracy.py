"""How well the analytic model predicts on this machine: the roofline alone and the efficiency model,
on rows they never learned from (``nox -s bench-predict``).

Three held-out views, each per family, as MAPE, median error and the share of rows within +-10 %
and +-20 % of the measured time:

1. **cross-validation** in the training runs: K folds grouped by layer configuration (a layer is
   never in the fold that predicts it);
2. **layer kinds held out**: each layer kind of the training runs predicted by a model fitted on
   all the other kinds (a kind the model never saw: what its op class and counts carry over);
3. **across runs**: the model fitted on run A (``layerbench fit``: the fit suite and its adaptive
   second pass) predicts run B, measured separately: a fresh design drawn from the same space
   (``make_fit_suite.py --seed 7 --scale 0.5``) and the ``quick`` suite, none of its cases in A;
   once with what ran as stored, once with what ran imputed as ``layerbench predict`` does for
   layers never measured.

The goal on a quiet host: the model within +-10 % for at least 90 % of the stable held-out rows,
with a median error at least 3x lower than the roofline's. No prediction can agree with a measurement
better than two measurements of the same case agree with each other: the held-out design is measured
a second time and that run-to-run agreement is printed beside the figures (the noise floor).

    python benchmarks/predict_accuracy.py                        # measure A, B and B again (5-6 min on 2 cores)
    python benchmarks/predict_accuracy.py --train 'results/fit-*' --test 'results/holdout-*' 'results/quick-*'
    python benchmarks/predict_accuracy.py --threads 1                      # a shared host: see docs/predicting.md
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from harness import record as R  # noqa: E402
from harness.predict.features import features  # noqa: E402
from harness.predict.model import (  # noqa: E402
    WHAT_RAN,
    accuracy,
    canary_reference,
    cross_validate,
    encode,
    fit,
    host_factor,
    training_rows,
    vocabulary,
)
from harness.predict.model import train as train_regressor  # noqa: E402
from harness.predict.roofline import num, roofline  # noqa: E402
from harness.store import load_runs  # noqa: E402

LAYERBENCH = [sys.executable, "-m", "harness.cli"]


def sh(argv: list[str]) -> None:
    print("$ " + " ".join(argv[2:] if argv[:2] == LAYERBENCH[:2] else argv), flush=True)
    subprocess.run(argv, check=True, cwd=ROOT)


def measure(out: Path, threads: int | None, budget: float) -> tuple[list[str], list[str], list[str]]:
    """Run A (``layerbench fit``), run B (a fresh design and ``quick``) and the design again (the noise
    floor) under ``out``."""
    import make_fit_suite
    runs = out / "runs"
    t = ["--threads", str(threads)] if threads else []
    sh(LAYERBENCH + ["fit", "--out", str(runs), "--models", str(out / "models"), "--budget", str(budget)] + t)
    train = sorted(str(p) for p in runs.iterdir() if p.is_dir())
    make_fit_suite.main(["--seed", "7", "--scale", "0.5", "--name", "holdout", "--out", str(out / "holdout.toml")])
    for suite in (str(out / "holdout.toml"), "quick"):
        sh(LAYERBENCH + ["run", suite, "--out", str(runs), "--processes", "1", "--no-report", "--quiet"] + t)
    test = sorted(str(p) for p in runs.iterdir() if p.is_dir() and str(p) not in train)
    sh(LAYERBENCH + ["run", str(out / "holdout.toml"), "--out", str(out / "repeat"), "--processes", "1",
                     "--no-report", "--quiet"] + t)
    return train, test, [str(p) for p in (out / "repeat").iterdir() if p.is_dir()]


def noise_floor(b: pd.DataFrame, again: pd.DataFrame) -> dict:
    """How far two measurements of the same cases (``b`` and ``again``, joined on case_id) are apart:
    the best agreement any prediction of one of them can reach; and (``host_*``) how far apart once
    each is scaled by its canary (``host_factor``), the agreement a prediction that knows the host's
    speed (the model's) is held to."""
    x, y = b.set_index(R.CASE_ID), again.set_index(R.CASE_ID)
    both = x.index.intersection(y.index)
    x, y = x.loc[both], y.loc[both]
    plain = accuracy(y[R.TIME_MEDIAN], x[R.TIME_MEDIAN])
    ref = canary_reference(x)
    scaled = accuracy(num(y, R.TIME_MEDIAN) / host_factor(y, ref) * host_factor(x, ref), x[R.TIME_MEDIAN])
    return {"cases": len(both), **plain, **{f"host_{k}": v for k, v in scaled.items() if k != "rows"}}


def load(paths: list[str]) -> pd.DataFrame:
    found = [p for pat in paths for p in sorted(glob.glob(pat))]
    loaded = load_runs(found)
    for line in loaded.refused:
        print(f"refused: {line}", file=sys.stderr)
    return loaded.frame


def stable(frame: pd.DataFrame) -> pd.Series:
    s = frame[R.STABILITY] if R.STABILITY in frame else pd.Series(None, index=frame.index)
    return s.isna() | s.astype(str).eq("stable")


def table(frame: pd.DataFrame, predicted: pd.Series, basis: str) -> list[dict]:
    out = []
    t = num(frame, R.TIME_MEDIAN)
    for family, g in [("(all)", frame)] + list(frame.groupby(R.FAMILY, sort=True)):
        a = accuracy(predicted.loc[g.index], t.loc[g.index])
        out.append({"family": family, "basis": basis, **a})
    return out


def show(title: str, rows: list[dict]) -> None:
    print(f"\n{title}")
    f = pd.DataFrame(rows)
    if f.empty:
        print("  (no rows)")
        return
    wide = f.pivot_table(index="family", columns="basis", values=["mape", "median_error", "within_10", "within_20"],
                         aggfunc="first")
    rows_n = f.groupby("family")["rows"].first()
    lines = []
    for fam in ["(all)"] + sorted(x for x in wide.index if x != "(all)"):
        r = wide.loc[fam]
        cells = [f"{fam:<20} {int(rows_n[fam]):>4}"]
        for b in ("roofline", "model", "model (what ran imputed)"):
            if ("mape", b) in r.index and not math.isnan(r[("mape", b)]):
                cells.append(f"{b.split()[0] if b != 'model (what ran imputed)' else 'imputed'}: MAPE "
                             f"{100 * r[('mape', b)]:6.1f} % median {100 * r[('median_error', b)]:5.1f} % "
                             f"+-10 % {100 * r[('within_10', b)]:3.0f} % +-20 % {100 * r[('within_20', b)]:3.0f} %")
        lines.append(" | ".join(cells))
    print("  family                rows | " + "roofline and model: MAPE, median |error|, shares within +-10 / +-20 %")
    for line in lines:
        print("  " + line)


def kinds_held_out(rows: pd.DataFrame) -> list[dict]:
    """Each layer kind predicted by a regressor fitted on the other kinds (no cross-validation inside)."""
    out_pred = pd.Series(np.nan, index=rows.index)
    roof = roofline(rows)["predicted_roofline_s"]
    host = host_factor(rows, canary_reference(rows))         # the host's speed taken out, as ``fit`` does
    y = np.log(num(rows, R.TIME_MEDIAN) / host / roof).to_numpy()
    for _, g in rows.groupby(R.LAYER):
        rest = rows.drop(index=g.index)
        if len(rest) < 20:
            continue
        vocab = vocabulary(rest)
        est = train_regressor(encode(features(rest), vocab), y[rows.index.get_indexer(rest.index)])
        cap = -math.log(max(1.0, float(np.exp(-y[rows.index.get_indexer(rest.index)]).max())) * 1.1)
        at = rows.index.get_indexer(g.index)
        out_pred.loc[g.index] = roof.loc[g.index] * np.exp(np.maximum(est.predict(encode(features(g), vocab)), cap)) \
            * host[at]
    res = []
    t = num(rows, R.TIME_MEDIAN)
    for kind, g in [("(all)", rows)] + list(rows.groupby(R.LAYER, sort=True)):
        res.append({"family": kind, "basis": "roofline", **accuracy(roof.loc[g.index], t.loc[g.index])})
        res.append({"family": kind, "basis": "model", **accuracy(out_pred.loc[g.index], t.loc[g.index])})
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", nargs="+", default=None, help="run A: stored runs to fit on (globs)")
    ap.add_argument("--test", nargs="+", default=None, help="run B: stored runs to predict (globs)")
    ap.add_argument("--repeat", nargs="+", default=None, help="B's cases measured again (globs): the noise floor")
    ap.add_argument("--out", default=None, help="where measured runs and results.json go")
    ap.add_argument("--threads", type=int, default=None, help="threads of the runs it measures (default: torch's)")
    ap.add_argument("--budget", type=float, default=600.0, help="seconds for layerbench fit's two passes")
    args = ap.parse_args()
    out = Path(args.out or ROOT / "results" / time.strftime("predict-accuracy-%Y%m%dT%H%M%SZ", time.gmtime()))
    out.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    t0 = time.time()
    repeat_paths = args.repeat or []
    if args.train is None or args.test is None:
        train_paths, test_paths, repeat_paths = measure(out, args.threads, args.budget)
        train_paths, test_paths = args.train or train_paths, args.test or test_paths
    else:
        train_paths, test_paths = args.train, args.test
    a, b = load(train_paths), load(test_paths)
    rows_a = training_rows(a)
    ref = canary_reference(rows_a)
    print(f"\nrun A (training): {len(a)} rows, {len(rows_a)} used; run B (held out): {len(b)} rows; "
          f"machine {a[R.MACHINE_ID].iloc[0]} settings {a[R.SETTINGS_ID].iloc[0]}; reference canary "
          + (f"{ref * 1e6:.1f} us per step (times scaled to it)" if ref else "none (no scaling)"))
    results: dict[str, list[dict]] = {}

    cv = cross_validate(rows_a, canary=canary_reference(rows_a))
    results["cross-validation"] = (table(rows_a, cv["roofline_s"], "roofline")
                                   + table(rows_a, cv["predicted_s"], "model"))
    show("1. cross-validation in run A (5 folds grouped by layer configuration)", results["cross-validation"])

    results["kinds held out"] = kinds_held_out(rows_a)
    show("2. whole layer kinds held out of run A (each kind predicted by a model of the other kinds)",
         results["kinds held out"])

    model = fit(a)
    ok = b[b[R.STATUS].eq("ok") & (num(b, R.TIME_MEDIAN) > 0)]
    ok = ok[~ok[R.CONFIG_ID].isin(set(a[R.CONFIG_ID]))]                # never in the training rows
    ok = ok[ok[R.SETTINGS_ID].eq(model.settings_id) & ok[R.MACHINE_ID].eq(model.machine_id)]
    roof = roofline(ok)["predicted_roofline_s"]
    stored = model.predict(ok)["predicted_s"]
    blank = ok.copy()
    for c in WHAT_RAN:
        blank[c] = None
    imputed = model.predict(blank, impute=True)["predicted_s"]
    st = ok[stable(ok)]
    results["across runs (stable rows)"] = (table(st, roof, "roofline") + table(st, stored, "model")
                                            + table(st, imputed, "model (what ran imputed)"))
    results["across runs (all rows)"] = (table(ok, roof, "roofline") + table(ok, stored, "model")
                                         + table(ok, imputed, "model (what ran imputed)"))
    show(f"3. fit on run A, predict run B: {len(st)} stable rows of {len(ok)} never in A",
         results["across runs (stable rows)"])
    show("   the same, every measured row of B (set-aside rows included)", results["across runs (all rows)"])

    floor = noise_floor(b, load(repeat_paths)) if repeat_paths else None
    if floor:
        print(f"\nnoise floor: {floor['cases']} cases of B measured again: median {100 * floor['median_error']:.1f} % "
              f"apart, {100 * floor['within_10']:.0f} % within 10 %, {100 * floor['within_20']:.0f} % within 20 %; "
              f"each scaled by its canary: median {100 * floor['host_median_error']:.1f} %, "
              f"{100 * floor['host_within_10']:.0f} % within 10 %, {100 * floor['host_within_20']:.0f} % within 20 %")
    head = {r["basis"]: r for r in results["across runs (stable rows)"] if r["family"] == "(all)"}
    m, rf = head.get("model", {}), head.get("roofline", {})
    ratio = rf.get("median_error", math.nan) / m.get("median_error", math.nan) if m.get("median_error") else math.nan
    print(f"\nheadline (B, stable rows): model within +-10 % for {100 * m.get('within_10', math.nan):.0f} % "
          f"(goal >= 90 %); median error {100 * m.get('median_error', math.nan):.1f} % against the roofline's "
          f"{100 * rf.get('median_error', math.nan):.1f} %: {ratio:.1f}x lower (goal >= 3x)")
    load_after = os.getloadavg()
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}; {time.time() - t0:.0f} s")
    doc = {"train": train_paths, "test": test_paths, "repeat": repeat_paths, "noise_floor": floor,
           "load_before": load_before, "load_after": load_after,
           "model": {"machine_id": model.machine_id, "settings_id": model.settings_id, "rows": model.rows,
                     "heldout": [g.heldout for g in model.groups]}, "results": results}
    (out / "results.json").write_text(json.dumps(doc, indent=1, default=str))
    print(f"results: {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
