"""Python-expression arithmetic, as upstream's ``eval(answer)`` would compute it, without ``eval``.

Upstream's 24-point checks call ``eval`` on the model's answer. We parse it with :mod:`ast` (the
grammar ``eval`` uses) and walk a whitelist: number and bool constants, ``+ - * / // % **``,
shifts and bitwise operators, unary signs, ``not``, comparisons, ``and``/``or``, conditional
expressions, tuples/lists, and calls of the pure builtins ``abs round min max pow int float bool
sum divmod``. Each operation runs on real Python ``int``/``float`` values, so results (float
rounding included) equal ``eval``'s. Anything else (names, attributes, strings, lambdas…) is
refused: for such answers ``eval`` could only raise or produce a non-number.

Bounds: expressions over :data:`MAX_CHARS` characters or :data:`MAX_NODES` nodes are refused, and
an integer result may not exceed :data:`MAX_INT_BITS` bits (``9**9**9**9`` is refused before any
big-integer work; ``eval`` would run for hours). Refusals raise :class:`Refused`.
"""

from __future__ import annotations

import ast
import operator
from typing import Any

MAX_CHARS = 10_000
MAX_NODES = 2_000
MAX_INT_BITS = 4_096


class Refused(ValueError):
    """The expression is outside what we evaluate (or would be too big to evaluate)."""


_BIN = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: pow, ast.LShift: operator.lshift,
        ast.RShift: operator.rshift, ast.BitOr: operator.or_, ast.BitXor: operator.xor,
        ast.BitAnd: operator.and_}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Invert: operator.invert, ast.Not: operator.not_}
_CMP = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
        ast.Gt: operator.gt, ast.GtE: operator.ge}
_FUNCS = {"abs": abs, "round": round, "min": min, "max": max, "pow": pow, "int": int, "float": float,
          "bool": bool, "sum": sum, "divmod": divmod}


def evaluate(expr: str) -> Any:
    """The value ``eval(expr)`` would give (see the module doc); raises on anything else."""
    if len(expr) > MAX_CHARS:
        raise Refused(f"expression of {len(expr)} characters")
    tree = ast.parse(expr.lstrip(" \t"), mode="eval")  # eval() strips leading spaces and tabs
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise Refused("expression too large")
    return _eval(tree.body)


def _check_int(value: Any) -> Any:
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise Refused("integer too large")
    return value


def _number(value: Any) -> Any:
    if type(value) not in (int, float, complex, bool):
        raise Refused(f"operand {type(value).__name__}")  # no list repetition and the like
    return value


def _power_ok(base: Any, exp: Any) -> None:
    if isinstance(base, int) and isinstance(exp, int) and exp > 0 and abs(base) > 1 \
            and exp * (abs(base).bit_length() - 1) > MAX_INT_BITS:
        raise Refused("power too large")


def _eval(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant):
        if type(node.value) in (int, float, complex, bool):
            return _check_int(node.value)
        raise Refused(f"constant {type(node.value).__name__}")
    if isinstance(node, ast.BinOp) and type(node.op) in _BIN:
        left, right = _number(_eval(node.left)), _number(_eval(node.right))
        if isinstance(node.op, ast.Pow):
            _power_ok(left, right)
        if isinstance(node.op, ast.LShift) and isinstance(right, int) and right > MAX_INT_BITS:
            raise Refused("shift too large")
        return _check_int(_BIN[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_number(_eval(node.operand)))
    if isinstance(node, ast.BoolOp):
        value = None
        for part in node.values:
            value = _eval(part)
            if isinstance(node.op, ast.And) != bool(value):
                return value
        return value
    if isinstance(node, ast.Compare):
        left = _eval(node.left)
        for op, comp in zip(node.ops, node.comparators, strict=True):
            if type(op) not in _CMP:
                raise Refused("comparison")
            right = _eval(comp)
            if not _CMP[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.IfExp):
        return _eval(node.body) if _eval(node.test) else _eval(node.orelse)
    if isinstance(node, ast.Tuple | ast.List) and isinstance(node.ctx, ast.Load):
        items = [_eval(e) for e in node.elts]
        return tuple(items) if isinstance(node, ast.Tuple) else items
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS \
            and not node.keywords and not any(isinstance(a, ast.Starred) for a in node.args):
        args = [_eval(a) for a in node.args]
        if node.func.id == "pow" and len(args) == 2:
            _power_ok(*args)
        return _check_int(_FUNCS[node.func.id](*args))
    raise Refused(f"not arithmetic: {type(node).__name__}")
