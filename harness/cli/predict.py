"""``layerbench fit``, ``layerbench predict`` and ``layerbench residuals``: the efficiency model of a
machine fitted, used on layers never measured, and set against stored rows (harness.predict;
docs/predicting.md)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

from harness.errors import SpecError

#: ``predict --format`` values.
FORMATS = ("table", "csv", "json")
#: ``fit``'s default time budget (seconds): both passes, calibration and fitting.
FIT_BUDGET_S = 600.0


def _models_store(args: argparse.Namespace) -> Any:
    return args.models or None


# --- fit ----------------------------------------------------------------------------------------------------

def cmd_fit(args: argparse.Namespace) -> int:
    from harness.predict.model import fit  # deferred: --help without torch/pandas
    from harness.predict.store import store_model  # deferred: as above
    t0 = time.monotonic()
    if args.runs:
        from harness.store.dataset import load_any  # deferred: as above
        loaded = load_any(args.runs)
        for line in loaded.refused:
            print(f"refused: {line}", file=sys.stderr)
        frame = loaded.frame
        if frame.empty:
            raise SpecError("runs", args.runs, "run directories, result files or globs that hold rows")
    else:
        frame = _measure(args, t0)
    written = 0
    for key, rows in frame.groupby(["machine_id", "device_type", "settings_id"], sort=True):
        try:
            model = fit(rows)
        except SpecError as e:
            print(f"no model for machine {key[0]} ({key[1]}, settings {key[2]}): {e}", file=sys.stderr)
            continue
        path = Path(args.output) if args.output else store_model(model, _models_store(args))
        if args.output:
            from harness.predict.model import save  # deferred: as above
            save(model, path)
        written += 1
        print(_fit_text(model, path, rows))
    if not written:
        raise SpecError("runs", args.runs or "the fit suite", "measured rows of one machine and settings with "
                        "counts and stored roofs, at least 8 of one dtype")
    print(f"fit took {time.monotonic() - t0:.0f} s")
    return 0


def _fit_text(model: Any, path: Path, rows: Any = None) -> str:
    lines = [f"model: {model.machine_name} [{model.machine_id}], {model.device_type}, settings {model.settings_id} "
             f"({model.threads} threads), from {len(model.runs)} run(s)"]
    for g in model.groups:
        h = g.heldout
        lines.append(f"  {g.label}: {g.rows} rows, {g.configs} layers; held out (5 folds by layer): median error "
                     f"{_pct(h.get('median_error'))}, {_pct(h.get('within_10'))} within 10 %, "
                     f"{_pct(h.get('within_20'))} within 20 % (roofline alone: median error "
                     f"{_pct(h.get('roofline_median_error'))}, {_pct(h.get('roofline_within_10'))} within 10 %); "
                     f"interval x{math.exp(g.interval[0]):.2f}..x{math.exp(g.interval[1]):.2f}")
        if (h.get("median_error") or 0) >= (h.get("roofline_median_error") or math.inf):
            lines.append(f"  warning: held out, the {g.label} model does no better than the roofline alone: its rows "
                         "vary more than the layers do (a busy host; fewer threads or a quieter host help)")
    ok = rows[rows["status"].astype(str).eq("ok")] if rows is not None and "status" in rows else None
    if ok is not None and "stability" in ok and len(ok):
        aside = int(ok["stability"].notna().sum() - ok["stability"].astype(str).eq("stable").sum())
        if aside > len(ok) // 2:
            lines.append(f"  warning: {aside} of {len(ok)} rows are not stable (mostly measured while other processes "
                         "used the CPUs): the model learns that noise along with the layers")
        else:
            lines += _left_out(ok)
    lines.append(f"stored: {path}")
    return "\n".join(lines)


def _left_out(ok: Any) -> list[str]:
    """The measured rows the model did not learn from (``predict.model.training_rows``), by verdict."""
    from harness.predict.model import training_rows  # deferred: --help without torch/pandas
    kept = training_rows(ok)
    gone = ok.loc[ok.index.difference(kept.index)]
    if gone.empty:
        return []
    kinds = ", ".join(f"{n} {k}" for k, n in gone["stability"].fillna("no verdict").astype(str).value_counts().items())
    return [f"  left out: {len(gone)} of {len(ok)} measured rows ({kinds}); the model learns from the others"]


def _pct(v: Any) -> str:
    return "-" if not isinstance(v, (int, float)) or not math.isfinite(v) else f"{100 * v:.0f} %"


def _measure(args: argparse.Namespace, t0: float) -> Any:
    """Both passes of the fit suite on this machine (module docstring of harness.predict.sampling)."""
    import pandas as pd  # deferred: --help without torch/pandas

    from harness.ceilings.calibrate import calibrate, lookup  # deferred: as above
    from harness.predict.sampling import heldout_errors, neighbours, read_suite_doc, stage_size  # deferred: as above
    from harness.runner import run_suite  # deferred: as above
    from harness.store import load_runs  # deferred: as above
    from harness.suite import load_suite, parse_suite  # deferred: as above
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    suite = load_suite(args.suite)
    device = args.device or suite.devices[0]
    progress = False if args.quiet else None
    print(f"fit: {suite.name}, {suite.count():,} cases on {device}, then neighbours of the layers predicted worst "
          f"while {args.budget:.0f} s last", file=sys.stderr)
    try:            # stored ceilings from before the launch floor: add it (the run measures what else is missing)
        stored = lookup(device, args.threads, args.ceilings)
        if stored is not None and stored.launch is None:
            calibrate(device, ["fp32"], threads=args.threads, store=args.ceilings)
    except Exception as e:  # noqa: BLE001 - the run measures against what it can; said in one line
        print(f"fit: calibration failed ({type(e).__name__}: {e}); the rows use what is stored", file=sys.stderr)
    common = dict(device=device, out=args.out, threads=args.threads, calibrate="missing", ceilings=args.ceilings,
                  processes=args.processes, progress=progress)
    first = run_suite(suite, **common)
    spent = time.monotonic() - t0
    ok = first.statuses.get("ok", 0)
    print(f"pass 1: {first.run_id}: {ok} ok in {first.seconds:.0f} s", file=sys.stderr)
    frames = [load_runs([first.run_dir]).frame]
    if first.interrupted:
        raise KeyboardInterrupt
    if not args.no_adaptive:
        errs = heldout_errors(frames[0])
        worst = errs[errs["heldout_error"] > 0.10].sort_values("heldout_error", ascending=False)
        n = stage_size(args.budget, spent, ok, first.seconds)
        doc = neighbours(read_suite_doc(suite.path), worst, n, measured=frames[0]) if n and len(worst) else None
        print(f"held out: {len(worst)} of {len(errs)} rows predicted more than 10 % off; "
              + (f"measuring {sum(len(next(iter(s['zip'].values()))) for s in doc['sweep'])} neighbours"
                 if doc else "no second pass" + ("" if n else " (no time left)")), file=sys.stderr)
        if doc is not None:
            second = run_suite(parse_suite(doc, suite.path), **common)
            print(f"pass 2: {second.run_id}: {second.statuses.get('ok', 0)} ok in {second.seconds:.0f} s",
                  file=sys.stderr)
            frames.append(load_runs([second.run_dir]).frame)
            if second.interrupted:
                raise KeyboardInterrupt
    return pd.concat(frames, ignore_index=True)


# --- predict ------------------------------------------------------------------------------------------------

def cmd_predict(args: argparse.Namespace) -> int:
    import pandas as pd  # deferred: --help without torch/pandas

    from harness.devices.identity import describe_machine_identity  # deferred: as above
    from harness.layers.dtypes import canonical_dtype  # deferred: as above
    from harness.layers.spec import LAYERS  # deferred: as above
    from harness.predict.cases import (  # deferred: --help without torch/pandas
        layer_case,
        predict_rows,
        rows_for,
        stored_machine,
        this_machine,
    )
    from harness.predict.model import load  # deferred: as above
    from harness.predict.store import find_model  # deferred: as above
    from harness.suite import load_suite  # deferred: as above
    dtypes = [canonical_dtype(d.strip(), "--dtype") for d in args.dtype.split(",") if d.strip()] if args.dtype \
        else None
    kind = args.target.lower().replace("-", "_")
    if kind in LAYERS and not Path(args.target).exists():
        cases = [layer_case(kind, args.params, args.input, d, args.memory_format) for d in (dtypes or ["fp32"])]
        device = args.device or "cpu"
    else:
        if args.params or args.input:
            raise SpecError("key=value/--input", " ".join(args.params) or args.input,
                            "nothing after a suite (parameters and shapes belong to a LAYER)")
        suite = load_suite(args.target)
        cases = list(suite.cases(dtypes))
        device = args.device or suite.devices[0]
    used = sorted({c.dtype for c in cases})
    here = describe_machine_identity(args.threads)
    if args.machine and args.machine != here.machine_id:
        target = stored_machine(args.machine, device.split(":", 1)[0], args.threads, args.ceilings)
    else:
        target = this_machine(device, used, args.threads, args.ceilings)
    store = _models_store(args)
    if args.model:
        model = load(args.model, machine_id=target.machine_id)
        if target.settings_id is not None and model.settings_id != target.settings_id:
            raise SpecError("--model", args.model, f"a model of these settings ({target.settings_id}); it is of "
                            f"settings {model.settings_id} ({model.threads} threads): pass --threads {model.threads}, "
                            "or fit one for these")
    else:
        model = find_model(target.machine_id, target.device_type, target.settings_id, store)
    if model is not None and target.settings_id is None:        # another machine: the settings its model is of
        target = dataclasses.replace(target, settings_id=model.settings_id)
    source = None
    if model is None and not target.here:
        source = find_model(here.machine_id, target.device_type, here.settings_id, store)
    rows = rows_for(cases, target)
    out = predict_rows(rows, target, model, source)
    sys.stdout.write(_predict_text(out, target, args.format, pd))
    return 0


#: What ``predict --format json`` and ``csv`` give per case.
PREDICT_COLUMNS = ["case_id", "family", "layer", "config", "input_shapes", "memory_format", "dtype", "pass",
                   "grads", "status",
                   "error", "flops", "bytes_read", "bytes_written", "predicted_s", "predicted_low_s",
                   "predicted_high_s", "predicted_roofline_s", "predicted_bound", "basis", "basis_detail",
                   "machine_id", "device_type"]


def _predict_text(out: Any, target: Any, fmt: str, pd: Any) -> str:
    cols = [c for c in PREDICT_COLUMNS if c in out]
    if fmt == "json":
        records = json.loads(out[cols].to_json(orient="records", double_precision=15))
        return json.dumps(records, indent=1) + "\n"
    if fmt == "csv":
        return out[cols].to_csv(index=False)
    from harness.analysis.findings import describe_row  # deferred: --help without torch/pandas
    from harness.units import seconds  # deferred: as above
    lines = [f"predict on {target.machine_name} [{target.machine_id}] ({target.device_type}): {target.source}"]
    table = pd.DataFrame({
        "case": [describe_row(r) if r["family"] == r["layer"] else f"{r['family']}: {describe_row(r)}"
                 for _, r in out.iterrows()],      # a layer predicted alone is its own family: named once
        "dtype": out["dtype"],
        "predicted": [seconds(v) if pd.notna(v) else (r.get("error") or "-")[:60] for v, (_, r) in
                      zip(out["predicted_s"], out.iterrows())],
        "interval": [f"{seconds(lo)}..{seconds(hi)}" if pd.notna(lo) and pd.notna(hi) else "-"
                     for lo, hi in zip(out["predicted_low_s"], out["predicted_high_s"])],
        "roofline": [seconds(v) if pd.notna(v) else "-" for v in out["predicted_roofline_s"]],
        "bound": out["predicted_bound"].fillna("-"),
        "basis": out["basis"].fillna("-"),
        "case_id": out["case_id"]})
    lines.append(table.to_string(index=False))
    for text in dict.fromkeys(out["basis_detail"].dropna()):
        lines.append(f"basis: {text}")
    return "\n".join(lines) + "\n"


# --- residuals ----------------------------------------------------------------------------------------------

def cmd_residuals(args: argparse.Namespace) -> int:
    from harness.predict.columns import model_keys  # deferred: --help without torch/pandas
    from harness.predict.model import load  # deferred: as above
    from harness.predict.store import models_for  # deferred: as above
    from harness.report import build_report, render_text  # deferred: as above
    from harness.report.model import build_model  # deferred: as above
    from harness.store.dataset import load_any  # deferred: as above
    loaded = load_any(args.runs)
    for line in loaded.refused:
        print(f"refused: {line}", file=sys.stderr)
    if loaded.frame.empty:
        raise SpecError("runs", args.runs, "run directories, result files or globs that hold rows")
    machines = set(loaded.frame["machine_id"].astype(str))
    if args.model:
        models = []
        for path in args.model:
            m = load(path)
            if m.machine_id not in machines:
                from harness.predict.model import ModelFileError  # deferred: as above
                raise ModelFileError(path, f"a model of machine {m.machine_id} ({m.machine_name}); these rows are of "
                                           f"{', '.join(sorted(machines))}")
            models.append(m)
    else:
        models = models_for(model_keys(loaded.frame), _models_store(args))
    model = build_model(loaded, with_plots=False, top=0, models=models)
    if args.format == "json":
        sys.stdout.write(render_text(model, "predictions-json"))
    else:
        sys.stdout.write(render_text(model, "predictions") + "\n")
    if args.report:
        rep = build_report(loaded, args.report, models=models)
        print(f"report: {rep.html}")
    return 0


def add(sub: Any) -> None:
    p = sub.add_parser("fit", help="fit this machine's efficiency model (runs the fit suite, or learns from RUNS)")
    p.add_argument("runs", nargs="*", help="stored runs to learn from (default: measure the built-in fit suite here, "
                   "then neighbours of the layers it predicts worst)")
    p.add_argument("--suite", default="fit", help="the suite measured without RUNS (default: fit)")
    p.add_argument("--device", default=None, help="cpu or cuda[:N] (default: the suite's first device)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for timing (default: torch's)")
    p.add_argument("--processes", type=int, default=None, metavar="N",
                   help="fresh worker processes per case (default: the suite's, 1)")
    p.add_argument("--budget", type=float, default=FIT_BUDGET_S, metavar="S",
                   help=f"seconds for both passes (default {FIT_BUDGET_S:.0f}): the second pass measures as many "
                        "neighbours as fit")
    p.add_argument("--no-adaptive", action="store_true", help="measure the suite only (no second pass)")
    p.add_argument("--out", default="results", help="results folder of the runs it measures (default results/)")
    p.add_argument("--models", default=None, metavar="DIR",
                   help="model store (default $LAYERBENCH_MODELS, else <ceilings store>/models)")
    p.add_argument("--output", "-o", default=None, metavar="FILE", help="write the model here instead of the store")
    p.add_argument("--ceilings", default=None, help="ceilings store (default ~/.cache/layerbench/ceilings)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("predict", help="predicted time of a suite's cases or one layer, measured or not, on this "
                       "machine or another with stored ceilings")
    p.add_argument("target", metavar="SUITE|LAYER", help="a suite (name or .toml file) or a layer kind (conv2d, ...)")
    p.add_argument("params", nargs="*", help="a layer's key=value parameters, as `layerbench count` takes them")
    p.add_argument("--input", action="append", metavar="SHAPE", help="a layer's input shape (repeat for several)")
    p.add_argument("--dtype", default=None, help="comma-separated dtypes (default: the suite's; a layer: fp32)")
    p.add_argument("--memory-format", default="nchw", choices=["nchw", "channels_last"], help="a layer's layout")
    p.add_argument("--device", default=None, help="cpu or cuda[:N] (default: the suite's first device; a layer: cpu)")
    p.add_argument("--machine", default=None, metavar="ID",
                   help="predict for another machine, from its stored ceilings and model (without a model: this "
                        "machine's efficiency transferred by op class, labelled so)")
    p.add_argument("--model", default=None, metavar="FILE", help="an efficiency model file (default: the stored one "
                   "of the machine and settings)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--format", default="table", choices=FORMATS)
    p.add_argument("--models", default=None, metavar="DIR", help="model store (default $LAYERBENCH_MODELS, else "
                   "<ceilings store>/models)")
    p.add_argument("--ceilings", default=None, help="ceilings store (default ~/.cache/layerbench/ceilings)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("residuals", help="stored rows against their prediction: per family, and the rows the "
                       "prediction missed most, with what their counts say")
    p.add_argument("runs", nargs="+", help="run directories, result files or globs")
    p.add_argument("--model", action="append", default=None, metavar="FILE",
                   help="efficiency model file(s) to apply (default: the stored model of each machine and settings)")
    p.add_argument("--models", default=None, metavar="DIR", help="model store")
    p.add_argument("--report", default=None, metavar="DIR", help="also write the HTML report with these predictions")
    p.add_argument("--format", default="table", choices=["table", "json"])
    p.set_defaults(func=cmd_residuals)
