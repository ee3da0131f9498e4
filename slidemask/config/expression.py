"""Output expressions: mask names combined with ``&`` (and), ``|`` (or), ``~`` (not).

:func:`parse_expression` turns ``"tissue & ~(blue_pen | green_pen)"`` into an :class:`Expr`
tree; :meth:`Expr.evaluate` combines arrays with it. Precedence is Python's: ``~`` binds
tightest, then ``&``, then ``|``. The text is parsed with :mod:`ast` and checked node by node;
nothing is ever evaluated as Python, so an expression can only name masks.
"""

from __future__ import annotations

import ast
import keyword
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from slidemask.errors import ConfigError

__all__ = ["Expr", "parse_expression"]


@dataclass(frozen=True)
class Expr:
    """A parsed mask expression: ``op`` is "name", "not", "and" or "or"."""

    op: str
    name: str = ""
    args: tuple[Expr, ...] = ()

    def names(self) -> set[str]:
        """Every mask name the expression uses."""
        if self.op == "name":
            return {self.name}
        return set().union(*(a.names() for a in self.args))

    def evaluate(self, masks: Mapping[str, Any]) -> Any:
        """Combine ``masks`` (dask or numpy bool arrays) with ``&``, ``|`` and ``~``."""
        if self.op == "name":
            return masks[self.name]
        values = [a.evaluate(masks) for a in self.args]
        if self.op == "not":
            return ~values[0]
        if self.op == "and":
            return values[0] & values[1]
        return values[0] | values[1]

    def __str__(self) -> str:
        return self._text(top=True)

    def _text(self, top: bool = False) -> str:
        if self.op == "name":
            return self.name
        if self.op == "not":
            return "~" + self.args[0]._text()
        sign = "&" if self.op == "and" else "|"
        text = f"{self.args[0]._text()} {sign} {self.args[1]._text()}"
        return text if top else f"({text})"


_MAX_EXPRESSION = 2000


def parse_expression(text: str) -> Expr:
    """Parse ``text`` made only of mask names, ``&``, ``|``, ``~`` and parentheses.

    Precedence as in Python: ``~`` binds tightest, then ``&``, then ``|``. Parsed with
    :mod:`ast` and checked node by node; nothing is ever evaluated as Python.

    Raises
    ------
    ConfigError
        Anything else: calls, attributes, constants, ``and``/``or``/``not``, other operators.
    """
    if not isinstance(text, str) or not text.strip():
        raise ConfigError("an expression over mask names is required, e.g. 'tissue & ~pen'")
    if len(text) > _MAX_EXPRESSION:
        raise ConfigError(f"expression is longer than {_MAX_EXPRESSION} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
        return _convert(tree.body)
    except SyntaxError as exc:
        raise ConfigError(f"{text!r} is not a valid expression ({exc.msg})") from None
    except RecursionError:
        raise ConfigError(f"expression {text[:40]!r}... is nested too deeply") from None


def _convert(node: ast.AST) -> Expr:
    if isinstance(node, ast.Name):
        if keyword.iskeyword(node.id):  # pragma: no cover - the parser rejects these
            raise ConfigError(f"{node.id!r} cannot be a mask name")
        return Expr("name", name=node.id)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Invert):
        return Expr("not", args=(_convert(node.operand),))
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.BitAnd, ast.BitOr)):
        op = "and" if isinstance(node.op, ast.BitAnd) else "or"
        return Expr(op, args=(_convert(node.left), _convert(node.right)))
    if isinstance(node, ast.BoolOp) or (
        isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not)
    ):
        raise ConfigError("use & (and), | (or) and ~ (not) instead of the words and/or/not")
    what = {
        ast.Call: "function calls",
        ast.Attribute: "attribute access",
        ast.Subscript: "indexing",
        ast.Constant: "constants",
        ast.Compare: "comparisons",
        ast.Lambda: "lambdas",
    }.get(type(node), f"{type(node).__name__} nodes")
    if isinstance(node, (ast.BinOp, ast.UnaryOp)):
        what = f"the operator {type(node.op).__name__}"
    raise ConfigError(
        f"only mask names, &, |, ~ and parentheses are allowed; found {what}"
    )

