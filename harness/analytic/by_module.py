"""The per-module roll-up of a count table: fvcore's ``flop_count_table`` from layerbench's rows.

Each op row of a count table carries the path of the innermost ``nn.Module`` it ran under
(``""``: the root). A module's figures are the sums over the rows that ran under it or under any
of its submodules, so the root's row equals ``totals(table)`` and a row deeper than ``depth`` is
folded into its ancestor at ``depth``. Rows come in execution order, each module after its
parent (pre-order by first op). Parameters are counted where they are first read, as in the op
table (a weight shared by two modules counts under the first).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pandas as pd

from harness.errors import SpecError

#: Columns of :func:`by_module`'s frame.
COLUMNS = ["module", "module_type", "depth", "ops", "uncounted_ops", "params", "flops", "macs",
           "bytes_read", "bytes_written", "intensity"]
#: The additive columns a module sums over its rows.
SUMMED = ["ops", "uncounted_ops", "params", "flops", "macs", "bytes_read", "bytes_written"]


def module_depth(path: str) -> int:
    """0 for the root (``""``), 1 for ``layer1``, 2 for ``layer1.0``, ..."""
    return path.count(".") + 1 if path else 0


def _ancestors(path: str, depth: int | None) -> Iterator[str]:
    """The root, then each prefix of ``path`` down to ``path`` itself, at most ``depth`` deep."""
    yield ""
    parts = path.split(".") if path else []
    for d in range(1, len(parts) + 1 if depth is None else min(len(parts), depth) + 1):
        yield ".".join(parts[:d])


def by_module(table: pd.DataFrame, depth: int | None = None,
              module_types: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Sum a count table (``harness.count``) per module, each module up to ``depth`` levels deep.

    Args:
        table: a forward count table (one row per op; its ``module`` column is the path).
        depth: the deepest module shown (``0``: the root only; ``None``: every module).
        module_types: module path -> class name for modules that ran no op of their own
            (``{name: type(m).__name__ for name, m in model.named_modules()}``); without it such a
            module's type is blank.

    Returns:
        One row per module (columns :data:`COLUMNS`): ``module`` the path (``""`` the root),
        ``depth``, ``ops`` the ops that do work (views excluded, as in ``totals``),
        ``uncounted_ops`` those the convention has no formula for, and the sums of ``params``,
        ``flops``, ``macs``, ``bytes_read``, ``bytes_written``; ``intensity`` FLOPs per byte moved.
    """
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 0):
        raise SpecError("depth", depth, "a module depth of 0 (the root only) or more")
    rows = pd.DataFrame({
        "module": table["module"].astype(str),
        "module_type": table["module_type"].astype(str),
        "ops": (~table["category"].isin(["view", "none"])).astype("int64"),
        "uncounted_ops": (~table["counted"].astype(bool)).astype("int64"),
        "params": table["params"].astype("int64"),
        "flops": table["flops"].fillna(0).astype("int64"),
        "macs": table["macs"].fillna(0).astype("int64"),
        "bytes_read": table["bytes_read"].astype("int64"),
        "bytes_written": table["bytes_written"].astype("int64"),
    })
    per_path = rows.groupby("module", sort=False)[SUMMED].sum()          # in order of first appearance
    own_type = rows.drop_duplicates("module").set_index("module")["module_type"]
    sums: dict[str, list[int]] = {"": [0] * len(SUMMED)}     # module shown -> its sums, by first appearance
    for path, values in zip(per_path.index, per_path.itertuples(index=False)):
        for ancestor in _ancestors(path, depth):       # the root ... the deepest module shown
            acc = sums.setdefault(ancestor, [0] * len(SUMMED))
            for i, v in enumerate(values):
                acc[i] += int(v)
    types = dict(module_types or {})
    out = []
    for path in _preorder(list(sums)):
        row: dict[str, Any] = dict(zip(SUMMED, sums[path]))
        moved = row["bytes_read"] + row["bytes_written"]
        row.update(module=path, depth=module_depth(path),
                   module_type=types.get(path) or str(own_type.get(path, "")),
                   intensity=row["flops"] / moved if moved else float("nan"))
        out.append(row)
    frame = pd.DataFrame(out, columns=COLUMNS)
    for col in SUMMED + ["depth"]:
        frame[col] = frame[col].astype("int64")
    frame["intensity"] = frame["intensity"].astype("float64")
    return frame



def _preorder(paths: list[str]) -> list[str]:
    """``paths`` (each after its parent, in order of first appearance) as a tree walk: each module
    directly followed by its submodules, siblings in order of first appearance."""
    children: dict[str, list[str]] = {}
    for path in paths[1:]:
        children.setdefault(path.rsplit(".", 1)[0] if "." in path else "", []).append(path)
    order, stack = [], [paths[0]]
    while stack:
        path = stack.pop()
        order.append(path)
        stack.extend(reversed(children.get(path, [])))
    return order
