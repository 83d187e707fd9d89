"""The identities a row carries, computed in one place: by suite expansion for new rows and by
``harness.store.upgrade`` for rows of older files, which must get the same ids for the same case.

``config_id`` = the first 16 hex digits of SHA-1 over the JSON of [layer, canonical config as
[name, value] pairs in name order, input shapes, memory format, dtype] (plus the case's axis
values for a case invalid before validation); ``case_id`` = the same over [family] + that list
(plus ``["threads", n]`` for a thread-sweep case); ``row_id`` = ``<machine_id>:<device>:<case_id>``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import Any


def digest(value: Any, n: int = 16) -> str:
    """The first ``n`` hex digits of SHA-1 over ``value`` as JSON (``str`` for anything else)."""
    return hashlib.sha1(json.dumps(value, default=str).encode()).hexdigest()[:n]


def pairs(items: Iterable[tuple[str, Any]]) -> list[list[Any]]:
    """``(name, value)`` items as sorted ``[name, value]`` lists (tuples as lists, as JSON has them)."""
    return [[k, list(v) if isinstance(v, tuple) else v] for k, v in sorted(items)]


def config_key(layer: str, config: Iterable[tuple[str, Any]], inputs: Sequence[Sequence[int]] | None,
               memory_format: str | None, dtype: str | None) -> list[Any]:
    """What ``config_id`` hashes (a list: callers may append to it)."""
    return [layer, pairs(config), [list(s) for s in inputs] if inputs is not None else None, memory_format, dtype]


def case_id(family: str | None, key: list[Any]) -> str:
    return digest([family] + key)


def row_id(machine_id: str, device: str, case: str) -> str:
    """``<machine_id>:<device>:<case_id>``: one case on one device of one machine."""
    return f"{machine_id}:{device}:{case}"
