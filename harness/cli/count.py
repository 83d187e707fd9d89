"""``layerbench count``: analytic counts of one layer or a whole model (a reference model, any
torchvision or timm model, or an ``nn.Module`` your own code builds), per op or per module."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from harness.errors import SpecError
from harness.layers.spec import LAYERS, parse_layer, parse_shape

#: Reference models (``harness.layers.zoo``): their ``--input`` defaults to theirs.
MODEL_NAMES = ("resnet50", "mobilenetv2", "vit-b16")
#: What ``count --model`` accepts, in words (its help and its error lines).
MODEL_FORMS = ("resnet50, mobilenetv2 or vit-b16; a torchvision model name (resnet18, torchvision.models.resnet18); "
               "timm:NAME; or module:callable (mypkg.models:build_net, path/to/file.py:build_net) returning an "
               "nn.Module")
#: The ``--depth`` of ``--by-module`` when none is given (fvcore's ``flop_count_table`` default).
DEFAULT_DEPTH = 3
#: Columns the ``table`` format shows (csv and json carry every column).
TABLE_COLUMNS = ["op", "module", "input_shapes", "output_shapes", "dtype", "flops", "macs", "params",
                 "bytes_read", "bytes_written", "intensity", "flop_counter_flops"]


def layer_help() -> str:
    """Every layer kind and its keys (``count --help``'s epilog)."""
    lines = []
    seen: set[type] = set()
    for cls in LAYERS.values():
        if cls in seen:
            continue
        seen.add(cls)
        kinds = [k for k, c in LAYERS.items() if c is cls]
        lines.append(f"  {'/'.join(kinds)}: {', '.join(sorted(cls.keys())) or '(no parameters)'}")
    return "layers and their keys:\n" + "\n".join(lines)


#: ``count --format`` values (the names ``compare`` and ``export`` use for the same formats).
FORMATS = ("table", "markdown", "json", "csv")


def render_count(table: Any, fmt: str) -> str:
    """The count table and its totals as ``table``, ``markdown``, ``csv`` or ``json`` text."""
    import pandas as pd  # deferred: --help without torch/pandas

    from harness.analytic.count import totals  # deferred: --help without torch/pandas
    if fmt == "csv":
        return table.to_csv(index=False)
    t = totals(table)
    if fmt == "json":
        rows = json.loads(table.to_json(orient="records"))
        return json.dumps({"rows": rows, "totals": json.loads(t.to_json())}, indent=2)
    shown = table[TABLE_COLUMNS].copy()
    shown["intensity"] = shown["intensity"].map(lambda v: "" if pd.isna(v) else f"{v:.2f}")
    if fmt == "markdown":
        body = shown.astype(object).fillna("-").to_markdown(index=False) + "\n"   # a blank line ends the table
    else:
        body = shown.to_string(index=False, na_rep="-")
    return body + "\n" + _footer(t)


def _footer(t: Any) -> str:
    """The totals line under a count table (per op or per module)."""
    return (f"total ({t['convention']}): {t['flops']:,} FLOPs, {t['macs']:,} MACs, {t['params']:,} params, "
            f"{t['bytes_read']:,} B read, {t['bytes_written']:,} B written, intensity {t['intensity']:.2f} FLOP/B; "
            f"{t['ops']} ops, {t['uncounted_ops']} uncounted; torch.utils.flop_counter: "
            f"{t['flop_counter_flops']:,} FLOPs over {t['flop_counter_ops']} ops it covers, "
            f"{t['flop_counter_disagreements']} disagreeing")


#: Columns the per-module ``table`` and ``markdown`` show (header, column, left-aligned).
MODULE_COLUMNS = [("module", "module", True), ("type", "module_type", True), ("ops", "ops", False),
                  ("params", "params", False), ("flops", "flops", False), ("macs", "macs", False),
                  ("bytes_read", "bytes_read", False), ("bytes_written", "bytes_written", False),
                  ("intensity", "intensity", False)]
#: The root's name in the per-module table and markdown (fvcore's ``flop_count_table`` calls it so too).
ROOT_LABEL = "model"


def render_by_module(frame: Any, t: Any, fmt: str) -> str:
    """The per-module roll-up (``harness.analytic.by_module``) and the totals: ``table`` and
    ``markdown`` indent each module by its depth and group digits; ``csv`` and ``json`` carry the
    paths (the model's is ``""``), ``depth`` and every column as numbers."""
    if fmt == "csv":
        return frame.to_csv(index=False)
    if fmt == "json":
        rows = json.loads(frame.to_json(orient="records"))
        return json.dumps({"modules": rows, "totals": json.loads(t.to_json())}, indent=2)
    indent = "\u00a0\u00a0" if fmt == "markdown" else "  "     # no-break spaces survive markdown rendering
    cells = []
    for row in frame.itertuples(index=False):
        r = row._asdict()
        cells.append([indent * r["depth"] + (r["module"] or ROOT_LABEL), r["module_type"]]
                     + [f"{r[c]:,}" for _, c, _ in MODULE_COLUMNS[2:-1]]
                     + ["" if r["intensity"] != r["intensity"] else f"{r['intensity']:.2f}"])
    heads = [h for h, _, _ in MODULE_COLUMNS]
    left = [a for _, _, a in MODULE_COLUMNS]
    if fmt == "markdown":
        lines = ["| " + " | ".join(heads) + " |", "|" + "|".join(":---" if a else "---:" for a in left) + "|"]
        lines += ["| " + " | ".join(c) + " |" for c in cells]
        return "\n".join(lines) + "\n\n" + _footer(t)     # a blank line ends the table
    widths = [max(len(x) for x in col) for col in zip(heads, *cells)]

    def line(values: list[str]) -> str:
        return "  ".join(v.ljust(w) if a else v.rjust(w) for v, w, a in zip(values, widths, left)).rstrip()
    return "\n".join([line(heads)] + [line(c) for c in cells]) + "\n\n" + _footer(t)


def _one_line(e: BaseException) -> str:
    """``Type: message`` on one line (a builder's exception, as an error line quotes it)."""
    text = " ".join(str(e).split())
    text = text if len(text) <= 200 else text[:197] + "..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _import(name: str, package: str, model: str, hint: str) -> Any:
    """Import ``name`` from the optional ``package`` for ``--model``; a missing or broken package is a
    ``SpecError`` line naming what to install."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise SpecError("model", model, f"{hint}, which needs {package}: pip install {package} "
                        "(or pip install 'layerbench[models]')") from None
    except Exception as e:  # installed but broken, e.g. a torchvision built for another torch
        raise SpecError("model", model, f"{hint}, which needs {package} to import (it raised {_one_line(e)}: "
                        f"are {package} and what it imports built for the installed torch?)") from None


@contextlib.contextmanager
def _on_path(folder: str) -> Iterator[None]:
    """``folder`` first on ``sys.path`` while a model's code is imported and built (as ``python -m``
    and ``python file.py`` put the working directory or the file's folder there)."""
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)
    try:
        yield
    finally:
        if added and folder in sys.path:
            sys.path.remove(folder)


def _torchvision_builder(name: str, model: str, hint: str) -> Callable[[], Any]:
    """``torchvision.models.get_model_builder(name)`` (``getattr(torchvision.models, name)`` where a
    torchvision has no registry)."""
    models = _import("torchvision.models", "torchvision", model, hint).__dict__
    lookup = models.get("get_model_builder")
    if lookup is not None:
        try:
            return lookup(name)
        except ValueError:
            pass
    elif callable(models.get(name)) and not name.startswith("_"):
        return models[name]
    known = models.get("list_models")
    hint = f" (torchvision.models.list_models() lists {len(known())})" if callable(known) else ""
    raise SpecError("model", model, f"a torchvision model name{hint}, or one of: {MODEL_FORMS}")


def _timm_builder(name: str, model: str) -> Callable[[], Any]:
    timm = _import("timm", "timm", model, "a timm model name after 'timm:'")
    is_model = getattr(timm, "is_model", None)
    if not name or (is_model is not None and not is_model(name.split(".", 1)[0])):
        raise SpecError("model", model, "a timm model name after 'timm:' (timm.list_models() lists them)")
    return lambda: timm.create_model(name, pretrained=False)


def _callable_builder(spec: str, model: str) -> tuple[Callable[[], Any], str]:
    """``module:callable`` or ``path/to/file.py:callable``: the callable and the folder its code
    imports from."""
    where, _, attr = spec.rpartition(":")
    if not where or not attr:
        raise SpecError("model", model, "module:callable with both parts, e.g. mypkg.models:build_net")
    if where.endswith(".py") or "/" in where or os.sep in where:
        path = Path(where).expanduser()
        if not path.is_file():
            raise SpecError("model", model, f"an existing Python file before ':' ({where} is not a file)")
        folder = str(path.resolve().parent)
        spec_ = importlib.util.spec_from_file_location(f"layerbench_model_{path.stem}", path)
        module = importlib.util.module_from_spec(spec_)
        sys.modules[spec_.name] = module        # as an import does (dataclasses, pickling look it up)
        with _on_path(folder):
            try:
                spec_.loader.exec_module(module)
            except Exception as e:
                del sys.modules[spec_.name]
                raise SpecError("model", model, f"a Python file that imports cleanly (running {where} raised "
                                f"{_one_line(e)})") from None
    else:
        folder = os.getcwd()
        with _on_path(folder):
            try:
                module = importlib.import_module(where)
            except ModuleNotFoundError as e:
                raise SpecError("model", model, f"an importable module before ':' ({_one_line(e)}; run from the "
                                "folder that holds it, set PYTHONPATH, or give path/to/file.py)") from None
            except Exception as e:
                raise SpecError("model", model, f"a module that imports cleanly (importing {where} raised "
                                f"{_one_line(e)})") from None
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise SpecError("model", model, f"a callable named {attr!r} in {where}")
        target = getattr(target, part)
    from torch import nn  # deferred: --help without torch/pandas
    if isinstance(target, nn.Module):           # a module built at import time: count it as it is
        return (lambda: target), folder
    if not callable(target):
        raise SpecError("model", model, f"a callable after ':' ({attr} is of type {type(target).__name__})")
    return target, folder


def resolve_model(name: str) -> tuple[Callable[[], Any], str | None, str]:
    """``count --model NAME`` -> (a builder taking no arguments, the default input shape or
    ``None``, the folder to import from while building). No model is built here; an unknown
    name, a missing package or a missing callable is a ``SpecError`` naming ``NAME``."""
    if name in MODEL_NAMES:
        from harness.layers.zoo import MODELS  # deferred: --help without torch/pandas
        return MODELS[name].build, MODELS[name].input, os.getcwd()
    if name.startswith("timm:"):
        return _timm_builder(name[len("timm:"):], name), None, os.getcwd()
    for prefix in ("torchvision.models.", "torchvision:"):
        if name.startswith(prefix):
            return (_torchvision_builder(name[len(prefix):].rsplit(".", 1)[-1], name, "a torchvision model name"),
                    None, os.getcwd())
    if ":" in name:
        builder, folder = _callable_builder(name, name)
        return builder, None, folder
    if not name.replace("_", "").isalnum():
        raise SpecError("model", name, f"one of: {MODEL_FORMS}")
    hint = f"{', '.join(MODEL_NAMES)} or a torchvision model name"
    return _torchvision_builder(name, name, hint), None, os.getcwd()


def build_model(name: str, resolved: tuple[Callable[[], Any], str | None, str] | None = None) -> tuple[Any, str | None]:
    """Build ``count --model NAME`` (``resolved``: what ``resolve_model(NAME)`` returned) on the meta
    device (nothing allocated), in eval mode, or on the CPU where its code needs real data to build
    (``.item()``, numpy); the second value is a note saying so (``None`` on the meta device)."""
    import torch  # deferred: --help without torch/pandas
    from torch import nn  # deferred: as above

    builder, _, folder = resolved or resolve_model(name)
    note = None
    with _on_path(folder):
        try:
            with torch.device("meta"):
                model = builder()
        except SpecError:
            raise
        except Exception as meta_error:
            try:
                model = builder()
            except Exception as e:
                raise SpecError("model", name, f"a model that builds without arguments (calling its builder "
                                f"raised {_one_line(e)})") from None
            note = (f"{name} could not be built on the meta device ({_one_line(meta_error)}); "
                    "built on the CPU instead")
    if not isinstance(model, nn.Module):
        raise SpecError("model", name, f"a callable that returns an nn.Module (it returned a {type(model).__name__})")
    return model.eval(), note


def _model_and_inputs(args: argparse.Namespace) -> tuple[Any, list[Any], Any]:
    """``--model NAME`` (and ``--input``, ``--dtype``) -> the model, its input shapes, the dtype."""
    from harness.layers.dtypes import parse_dtype  # deferred: --help without torch/pandas
    if args.layer:
        raise SpecError("layer", args.layer, "no layer when --model is given")
    resolved = resolve_model(args.model)
    default_input = resolved[1]
    if not args.input and default_input is None:
        raise SpecError("input", None, f"an input shape such as --input 1x3x224x224 for --model {args.model} "
                        f"(only {', '.join(MODEL_NAMES)} have a default)")
    shapes = [parse_shape(s) for s in (args.input or [default_input])]
    dtype = parse_dtype(args.dtype)
    model, note = build_model(args.model, resolved)
    if note:
        print(f"layerbench count: note: {note}", file=sys.stderr)
    return model.to(dtype), shapes, dtype


def cmd_count(args: argparse.Namespace) -> int:
    from harness.analytic.catalog import get_convention  # deferred: --help without torch/pandas
    from harness.analytic.count import count, totals  # deferred: as above
    from harness.layers.modules import build_case  # deferred: as above
    if args.depth is not None and not args.by_module:
        raise SpecError("depth", args.depth, "--by-module as well (--depth is the depth of its per-module table)")
    if args.depth is not None and args.depth < 0:
        raise SpecError("depth", args.depth, "a module depth of 0 (the model only) or more")
    convention = get_convention(args.convention)
    if args.model:
        model, shapes, dtype = _model_and_inputs(args)
    else:
        if not args.layer:
            raise SpecError("layer", None, "a layer kind (e.g. conv2d) or --model NAME")
        spec = parse_layer(args.layer, args.params)
        model, shapes, dtype = build_case(spec, args.input, args.dtype)
    table = count(model, *shapes, convention=convention, dtype=dtype)
    if args.by_module:
        from harness.analytic.by_module import by_module  # deferred: as above
        types = {name: type(m).__name__ for name, m in model.named_modules()}
        depth = DEFAULT_DEPTH if args.depth is None else args.depth
        print(render_by_module(by_module(table, depth, types), totals(table), args.format))
    else:
        print(render_count(table, args.format))
    return 0


def add(sub: Any) -> None:
    p = sub.add_parser("count", help="analytic counts of one layer or a model (FLOPs, MACs, params, bytes)",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("layer", nargs="?", help="layer kind, e.g. conv2d, linear, sdpa (list below)")
    p.add_argument("params", nargs="*", help="key=value parameters, e.g. in=64 out=128 k=3 s=2 p=1 g=1")
    p.add_argument("--input", action="append", metavar="SHAPE",
                   help="input shape such as 1x64x56x56 (repeat for several inputs)")
    p.add_argument("--model", metavar="NAME", help="count a whole model instead of one layer: " + MODEL_FORMS
                   + " (built on the meta device, in eval mode; --input is required but for the first three)")
    p.add_argument("--dtype", default="fp32", help="fp32, fp16, bf16, ... (default fp32)")
    p.add_argument("--convention", default="canonical",
                   help="canonical, flop_counter, fvcore, ptflops, thop, torchinfo, torchstat")
    p.add_argument("--format", default="table", choices=FORMATS,
                   help="table (default), markdown, json (rows and totals), csv (rows); with --by-module "
                   "the modules instead of the rows")
    p.add_argument("--by-module", action="store_true",
                   help="one row per module (fvcore's flop_count_table): each module's ops rolled up, the model first")
    p.add_argument("--depth", type=int, metavar="N", help=f"with --by-module: modules up to N levels below the "
                   f"model (default {DEFAULT_DEPTH}; 0: the model only)")
    p.set_defaults(func=cmd_count)
