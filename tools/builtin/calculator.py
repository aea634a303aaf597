"""The ``calculator`` tool: arithmetic on numbers, evaluated from the syntax tree, never ``eval``.

Only number literals, + - * / // % ** and unary signs, parentheses, the constants ``pi``, ``e``,
``tau`` and a few ``math`` functions are accepted; anything else (names, attributes, calls of
other functions, strings) is refused before anything is computed.
"""

from __future__ import annotations

import ast
import math
import operator

TYPE_CHECKING = False  # not typing's: the import would be paid on every call of the tool
if TYPE_CHECKING:
    from collections.abc import Callable

SPEC = {
    "name": "calculator",
    "description": "Evaluate an arithmetic expression: numbers, + - * / // % **, parentheses, "
    "pi, e, tau and sqrt, exp, log, log10, sin, cos, tan, floor, ceil, abs, round.",
    "kind": "python",
    "target": "tools.builtin.calculator:evaluate",
    "parameters": {
        "type": "object",
        "properties": {"expression": {"type": "string", "description": "e.g. (2 + 3) * sqrt(16) / 7"}},
        "required": ["expression"],
        "additionalProperties": False,
    },
    "timeout_s": 5,
}

_MAX_LENGTH = 1000
# 10 ** 10 ** 10 would run out the CPU limit building a number no one can read.
_MAX_EXPONENT = 10_000

_BINARY: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[float], float]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_CONSTANTS = {"pi": math.pi, "e": math.e, "tau": math.tau}
_FUNCTIONS: dict[str, Callable[..., float]] = {
    "sqrt": math.sqrt, "exp": math.exp, "log": math.log, "log10": math.log10, "sin": math.sin,
    "cos": math.cos, "tan": math.tan, "floor": math.floor, "ceil": math.ceil, "abs": abs, "round": round,
}  # fmt: skip


def evaluate(expression: str) -> str:
    """The value of ``expression``; ValueError says what is not allowed."""
    if len(expression) > _MAX_LENGTH:
        raise ValueError(f"the expression is longer than {_MAX_LENGTH} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"not an arithmetic expression: {exc.msg}") from None
    return repr(_value(tree.body))


def _value(node: ast.expr) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_value(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _value(node.left), _value(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > _MAX_EXPONENT:
            raise ValueError(f"exponents are limited to {_MAX_EXPONENT}")
        return _BINARY[type(node.op)](left, right)
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCTIONS
        and not node.keywords
    ):
        return _FUNCTIONS[node.func.id](*(_value(argument) for argument in node.args))
    raise ValueError(f"{ast.unparse(node)!r} is not allowed in an arithmetic expression")
