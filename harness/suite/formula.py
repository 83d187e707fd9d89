"""Small arithmetic formulas over a sweep's names (``derive``, ``solve``): parsed once, evaluated
with bounds, so no formula can hang or exhaust memory (``10**10**10``, ``'x' * 10**10``).

Allowed: numbers, names, ``+ - * / // % **``, unary ``-``/``+`` and ``round int min max abs ceil
floor``. Every value is a finite int or float of magnitude at most ``MAX_MAGNITUDE``; an exponent
is at most ``MAX_EXPONENT``. A bound exceeded raises ``ArithmeticError`` naming it (the case becomes
a ``skipped`` row with that reason).
"""

from __future__ import annotations

import ast
import keyword
import math
import operator
import re
from collections.abc import Callable, Mapping
from typing import Any

#: Largest magnitude any formula value may take (2^53: every integer below it is exact in a float).
MAX_MAGNITUDE = 2**53
#: Largest exponent of ``**``.
MAX_EXPONENT = 64
#: Longest formula accepted (characters) and deepest expression tree.
MAX_LENGTH, MAX_DEPTH = 500, 50

_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
FUNCS: dict[str, Callable[..., Any]] = {"round": round, "int": int, "min": min, "max": max, "abs": abs,
                                        "ceil": math.ceil, "floor": math.floor}


class FormulaError(ValueError):
    """A formula that is not bounded arithmetic over names (the message says what is wrong)."""


def compile_formula(text: str) -> ast.Expression:
    """Parse ``text``; ``FormulaError`` if it is anything but bounded arithmetic (module docstring)."""
    if not isinstance(text, str) or len(text) > MAX_LENGTH:
        raise FormulaError(f"an arithmetic formula of at most {MAX_LENGTH} characters")
    # names may be Python keywords (``in``): parse them as ``in_`` and read them back as ``in``
    text_py = re.sub(r"\b[A-Za-z_]\w*\b", lambda m: m.group(0) + "_" if keyword.iskeyword(m.group(0)) else m.group(0),
                     text)
    try:
        tree = ast.parse(text_py, mode="eval")
    except (SyntaxError, ValueError, RecursionError) as e:
        raise FormulaError(f"an arithmetic formula ({getattr(e, 'msg', e)})") from None
    _check(tree.body, 0)
    return tree


def _check(node: ast.AST, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise FormulaError(f"a formula nested at most {MAX_DEPTH} deep")
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise FormulaError("numbers and names only (no strings or booleans in formulas)")
        return
    if isinstance(node, ast.Name):
        return
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        return _check(node.operand, depth + 1)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        _check(node.left, depth + 1)
        return _check(node.right, depth + 1)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FUNCS and \
            not node.keywords and node.args:
        for a in node.args:
            _check(a, depth + 1)
        return
    raise FormulaError("arithmetic on names and numbers only, with " + "/".join(FUNCS))


def axis_name(name: str) -> str:
    """``in_`` (a keyword escaped for parsing) back to ``in``."""
    return name[:-1] if name.endswith("_") and keyword.iskeyword(name[:-1]) else name


def formula_names(tree: ast.Expression) -> set[str]:
    """Names a formula reads."""
    return {axis_name(n.id) for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id not in FUNCS}


def _bounded(v: Any) -> Any:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ArithmeticError(f"a number, got {type(v).__name__} {v!r}")
    if not math.isfinite(v) or abs(v) > MAX_MAGNITUDE:
        raise ArithmeticError(f"a finite value of magnitude at most 2**53, got {v!r:.40}")
    return v


def _pow(a: Any, b: Any) -> Any:
    if abs(b) > MAX_EXPONENT:
        raise ArithmeticError(f"an exponent of at most {MAX_EXPONENT}, got {b!r}")
    if a != 0 and abs(b) * math.log2(abs(a)) > 53:
        raise ArithmeticError(f"{a!r} ** {b!r} exceeds 2**53")
    return a**b


def evaluate(tree: ast.AST, env: Mapping[str, Any]) -> Any:
    """Value of a compiled formula, ``env`` giving the names' values; ``KeyError`` for a missing name,
    ``ArithmeticError``/``ValueError``/``TypeError`` for a failing operation or a bound exceeded."""
    if isinstance(tree, ast.Expression):
        return evaluate(tree.body, env)
    if isinstance(tree, ast.Constant):
        return _bounded(tree.value)
    if isinstance(tree, ast.Name):
        return _bounded(env[axis_name(tree.id)])
    if isinstance(tree, ast.UnaryOp):
        v = evaluate(tree.operand, env)
        return -v if isinstance(tree.op, ast.USub) else v
    if isinstance(tree, ast.BinOp):
        a, b = evaluate(tree.left, env), evaluate(tree.right, env)
        return _bounded(_pow(a, b) if isinstance(tree.op, ast.Pow) else _BINOPS[type(tree.op)](a, b))
    if isinstance(tree, ast.Call):
        return _bounded(FUNCS[tree.func.id](*(evaluate(a, env) for a in tree.args)))  # type: ignore[union-attr]
    raise TypeError(type(tree).__name__)
