"""``layerbench`` command line. Subcommands render what the library returns; none computes."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import pandas as pd

from harness.analytic.conventions import conventions
from harness.count import count, totals
from harness.dtypes import parse_dtype
from harness.errors import LayerbenchError, SpecError
from harness.spec import LAYERS, build_case, parse_layer, parse_shape
from harness.zoo import MODELS

#: Columns the ``table`` format shows (csv and json carry every column).
TABLE_COLUMNS = ["op", "module", "input_shapes", "output_shapes", "dtype", "flops", "macs", "params",
                 "bytes_read", "bytes_written", "intensity", "flop_counter_flops"]


def _layer_help() -> str:
    lines = []
    seen: set[type] = set()
    for cls in LAYERS.values():
        if cls in seen:
            continue
        seen.add(cls)
        kinds = [k for k, c in LAYERS.items() if c is cls]
        keys = ", ".join(sorted(cls.keys()))
        lines.append(f"  {'/'.join(kinds)}: {keys or '(no parameters)'}")
    return "layers and their keys:\n" + "\n".join(lines)


def render_count(table: pd.DataFrame, fmt: str) -> str:
    """The count table and its totals as ``table``, ``csv`` or ``json`` text."""
    if fmt == "csv":
        return table.to_csv(index=False)
    t = totals(table)
    if fmt == "json":
        rows = json.loads(table.to_json(orient="records"))
        return json.dumps({"rows": rows, "totals": json.loads(t.to_json())}, indent=2)
    shown = table[TABLE_COLUMNS].copy()
    shown["intensity"] = shown["intensity"].map(lambda v: "" if pd.isna(v) else f"{v:.2f}")
    body = shown.to_string(index=False, na_rep="-")
    foot = (f"\ntotal ({t['convention']}): {t['flops']:,} FLOPs, {t['macs']:,} MACs, {t['params']:,} params, "
            f"{t['bytes_read']:,} B read, {t['bytes_written']:,} B written, intensity {t['intensity']:.2f} FLOP/B; "
            f"{t['ops']} ops, {t['uncounted_ops']} uncounted; torch.utils.flop_counter: "
            f"{t['flop_counter_flops']:,} FLOPs over {t['flop_counter_ops']} ops it covers, "
            f"{t['flop_counter_disagreements']} disagreeing")
    return body + foot


def _cmd_count(args: argparse.Namespace) -> int:
    if args.model:
        if args.layer:
            raise SpecError("layer", args.layer, "no layer when --model is given")
        model = MODELS[args.model](device="meta")
        shapes = [parse_shape(s) for s in (args.input or ["1x3x224x224"])]
        dtype = parse_dtype(args.dtype)
        model = model.to(dtype)
    else:
        if not args.layer:
            raise SpecError("layer", None, "a layer kind (e.g. conv2d) or --model NAME")
        spec = parse_layer(args.layer, args.params)
        model, shapes, dtype = build_case(spec, args.input, args.dtype)
    table = count(model, *shapes, convention=args.convention, dtype=dtype)
    print(render_count(table, args.format))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="layerbench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("count", help="analytic counts of one layer (FLOPs, MACs, params, bytes)",
                       epilog=_layer_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("layer", nargs="?", help="layer kind, e.g. conv2d, linear, sdpa (list below)")
    p.add_argument("params", nargs="*", help="key=value parameters, e.g. in=64 out=128 k=3 s=2 p=1 g=1")
    p.add_argument("--input", action="append", metavar="SHAPE",
                   help="input shape such as 1x64x56x56 (repeat for several inputs)")
    p.add_argument("--model", choices=sorted(MODELS), help="count a whole reference model instead of one layer "
                   "(built on the meta device; --input defaults to 1x3x224x224)")
    p.add_argument("--dtype", default="fp32", help="fp32, fp16, bf16, ... (default fp32)")
    p.add_argument("--convention", default="canonical", choices=conventions())
    p.add_argument("--format", default="table", choices=["table", "csv", "json"])
    p.set_defaults(func=_cmd_count)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except LayerbenchError as e:
        print(f"layerbench {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
