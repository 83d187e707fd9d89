"""The one home of rendering: a registry from (model type, format) to the function that renders it,
filled by decorators in the modules that hold the models (``render``: the report; ``summary``: the
end of a run; ``compare``: compare and regress; ``site``: the history site; ``machine``: devices
and ceilings). File renderers write files and return their paths; text renderers return what the
console prints. A model never renders itself, and a renderer computes nothing its model does not
hold (shaped after ``torch/utils/flop_counter.py``'s registry, and NVBench's pluggable printers).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

FileRenderer = Callable[[Any, Path], list[Path]]
TextRenderer = Callable[[Any], str]
F = TypeVar("F", bound=Callable[..., Any])

FILES: dict[tuple[type, str], FileRenderer] = {}
TEXT: dict[tuple[type, str], TextRenderer] = {}


def renderer(model: type, fmt: str, *, text: bool = False) -> Callable[[F], F]:
    """Register the decorated function as the ``fmt`` renderer of ``model`` (a text renderer when
    ``text``); a second registration of the same pair is an error."""
    table: dict[tuple[type, str], Any] = TEXT if text else FILES

    def deco(fn: F) -> F:
        if (model, fmt) in table:
            raise RuntimeError(f"duplicate renderer {fmt!r} for {model.__name__}")
        table[(model, fmt)] = fn
        return fn
    return deco


def formats(model: type, *, text: bool = False) -> list[str]:
    """The formats ``model`` renders to (files, or console text)."""
    return sorted(f for m, f in (TEXT if text else FILES) if m is model)


def _lookup(table: dict[tuple[type, str], Any], model: Any, fmt: str) -> Any:
    try:
        return table[(type(model), fmt)]
    except KeyError:
        raise ValueError(f"no {fmt!r} renderer for {type(model).__name__}: expected one of "
                         + ", ".join(f for m, f in table if m is type(model))) from None


def render(model: Any, fmt: str, path: Path) -> list[Path]:
    """Write ``model`` as ``fmt`` at ``path`` (a directory or a file, as the format writes); the
    files written."""
    return _lookup(FILES, model, fmt)(model, Path(path))


def render_text(model: Any, fmt: str) -> str:
    """``model`` as console text in ``fmt``."""
    return _lookup(TEXT, model, fmt)(model)
