"""``layerbench count``: analytic counts of one layer or a reference model."""

from __future__ import annotations

import argparse
import json
from typing import Any

from harness.errors import SpecError
from harness.layers.spec import LAYERS, parse_layer, parse_shape

#: Reference models ``count --model`` accepts (``harness.layers.zoo``).
MODEL_NAMES = ("resnet50", "mobilenetv2", "vit-b16")
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
    foot = (f"\ntotal ({t['convention']}): {t['flops']:,} FLOPs, {t['macs']:,} MACs, {t['params']:,} params, "
            f"{t['bytes_read']:,} B read, {t['bytes_written']:,} B written, intensity {t['intensity']:.2f} FLOP/B; "
            f"{t['ops']} ops, {t['uncounted_ops']} uncounted; torch.utils.flop_counter: "
            f"{t['flop_counter_flops']:,} FLOPs over {t['flop_counter_ops']} ops it covers, "
            f"{t['flop_counter_disagreements']} disagreeing")
    return body + foot


def cmd_count(args: argparse.Namespace) -> int:
    from harness.analytic.catalog import get_convention  # deferred: --help without torch/pandas
    from harness.analytic.count import count  # deferred: as above
    from harness.layers.dtypes import parse_dtype  # deferred: as above
    from harness.layers.modules import build_case  # deferred: as above
    convention = get_convention(args.convention)
    if args.model:
        from harness.layers.zoo import MODELS  # deferred: as above
        if args.layer:
            raise SpecError("layer", args.layer, "no layer when --model is given")
        shapes = [parse_shape(s) for s in (args.input or [MODELS[args.model].input])]
        dtype = parse_dtype(args.dtype)
        model = MODELS[args.model].build(device="meta").to(dtype)
    else:
        if not args.layer:
            raise SpecError("layer", None, "a layer kind (e.g. conv2d) or --model NAME")
        spec = parse_layer(args.layer, args.params)
        model, shapes, dtype = build_case(spec, args.input, args.dtype)
    table = count(model, *shapes, convention=convention, dtype=dtype)
    print(render_count(table, args.format))
    return 0


def add(sub: Any) -> None:
    p = sub.add_parser("count", help="analytic counts of one layer or a model (FLOPs, MACs, params, bytes)",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("layer", nargs="?", help="layer kind, e.g. conv2d, linear, sdpa (list below)")
    p.add_argument("params", nargs="*", help="key=value parameters, e.g. in=64 out=128 k=3 s=2 p=1 g=1")
    p.add_argument("--input", action="append", metavar="SHAPE",
                   help="input shape such as 1x64x56x56 (repeat for several inputs)")
    p.add_argument("--model", choices=MODEL_NAMES, help="count a whole reference model instead of one layer "
                   "(built on the meta device; --input defaults to the model's)")
    p.add_argument("--dtype", default="fp32", help="fp32, fp16, bf16, ... (default fp32)")
    p.add_argument("--convention", default="canonical",
                   help="canonical, flop_counter, fvcore, ptflops, thop, torchinfo, torchstat")
    p.add_argument("--format", default="table", choices=FORMATS,
                   help="table (default), markdown, json (rows and totals), csv (rows)")
    p.set_defaults(func=cmd_count)
