"""A multi grader's ``calculate_output``: arithmetic over named scores, parsed and checked, never ``eval``'d.

The formula is read with Python's own parser (``ast.parse`` builds a tree and runs nothing), then
every node is checked against a short whitelist: numbers, the sub-graders' names, ``+ - * /``,
``^`` and ``**`` for powers, unary minus, parentheses and OpenAI's functions ``min``, ``max``,
``abs``, ``floor``, ``ceil``, ``exp``, ``sqrt`` and ``log``. Evaluation is in floats; division by
zero, overflow and math-domain errors (``sqrt(-1)``) are FormulaErrors that say which.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from service.core.errors import InvalidRequest, Unprocessable

MAX_LENGTH = 1000
FUNCTIONS: dict[str, tuple[Callable[..., float], int | None]] = {
    # name -> (function, number of arguments; None: one or more)
    "min": (min, None),
    "max": (max, None),
    "abs": (abs, 1),
    "floor": (math.floor, 1),
    "ceil": (math.ceil, 1),
    "exp": (math.exp, 1),
    "sqrt": (math.sqrt, 1),
    "log": (math.log, 1),
}
_BINARY: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.Pow: lambda a, b: a**b,
    ast.BitXor: lambda a, b: a**b,  # OpenAI writes powers as ``^``
}


class FormulaError(Unprocessable):
    """Evaluating a formula failed on these scores (division by zero, overflow, math domain)."""

    code = "formula_error"


@dataclass(frozen=True)
class Formula:
    text: str
    tree: ast.expr
    param: str

    def evaluate(self, scores: Mapping[str, float]) -> float:
        """The formula's value for ``scores`` (one per name); raise FormulaError when undefined."""
        try:
            value = _evaluate(self.tree, scores)
        except ZeroDivisionError:
            raise self._error("division by zero") from None
        except OverflowError:
            raise self._error("overflow (a result too large for a float)") from None
        except ValueError as exc:
            raise self._error(f"math domain error ({exc})") from None
        except RecursionError:
            raise self._error("nested too deeply") from None
        if not math.isfinite(value):
            raise self._error("overflow (a result too large for a float)")
        return value

    def _error(self, what: str) -> FormulaError:
        return FormulaError(f"calculate_output '{self.text}' failed: {what}.", param=self.param)


def _invalid(text: str, param: str, why: str) -> InvalidRequest:
    return InvalidRequest(
        f"calculate_output '{text}' is not a valid formula: {why}.", param=param, code="invalid_formula"
    )


def compile_formula(text: str, names: set[str], param: str) -> Formula:
    """Parse and check ``text``; raise InvalidRequest (``param``) naming what is not allowed."""
    if not text.strip():
        raise _invalid(text, param, "it is empty")
    if len(text) > MAX_LENGTH:
        raise _invalid(text[:40] + "…", param, f"it is longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise _invalid(text, param, "it does not parse as arithmetic") from None
    try:
        _check(tree, text, names, param)
    except RecursionError:
        raise _invalid(text, param, "it is nested too deeply") from None
    return Formula(text=text, tree=tree, param=param)


def _check(node: ast.expr, text: str, names: set[str], param: str) -> None:
    """Walk the tree, allowing only the whitelisted shapes (a function name is valid only when called)."""
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise _invalid(text, param, f"{node.value!r} is not a number")
    elif isinstance(node, ast.Name):
        if node.id not in names:
            known = ", ".join(sorted(names)) or "none"
            raise _invalid(text, param, f"unknown name '{node.id}' (graders: {known})")
    elif isinstance(node, ast.BinOp):
        if type(node.op) not in _BINARY:
            raise _invalid(text, param, f"operator {type(node.op).__name__} is not allowed")
        _check(node.left, text, names, param)
        _check(node.right, text, names, param)
    elif isinstance(node, ast.UnaryOp):
        if not isinstance(node.op, ast.USub | ast.UAdd):
            raise _invalid(text, param, f"operator {type(node.op).__name__} is not allowed")
        _check(node.operand, text, names, param)
    elif isinstance(node, ast.Call):
        name = node.func.id if isinstance(node.func, ast.Name) else ""
        if name not in FUNCTIONS or node.keywords:
            raise _invalid(text, param, f"only {', '.join(FUNCTIONS)} may be called")
        arity = FUNCTIONS[name][1]
        if (arity is None and not node.args) or (arity is not None and len(node.args) != arity):
            raise _invalid(text, param, f"{name}() takes {arity or 'one or more'} argument(s)")
        for arg in node.args:
            _check(arg, text, names, param)
    else:
        raise _invalid(text, param, f"{type(node).__name__} is not allowed")


def _evaluate(node: ast.expr, scores: Mapping[str, float]) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return float(node.value)
    if isinstance(node, ast.Name):
        return float(scores[node.id])
    if isinstance(node, ast.UnaryOp):
        value = _evaluate(node.operand, scores)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp):
        result = _BINARY[type(node.op)](_evaluate(node.left, scores), _evaluate(node.right, scores))
        if isinstance(result, complex):  # a negative base to a fractional power
            raise ValueError("a negative number to a fractional power")
        return float(result)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        function = FUNCTIONS[node.func.id][0]
        return float(function(*(_evaluate(arg, scores) for arg in node.args)))
    raise ValueError(f"{type(node).__name__} is not allowed")  # unreachable after _check
