"""Read an mmdet Python config as bounded data, without running it.

The file is parsed with :mod:`ast` and only ``name = value`` statements are evaluated, where a value is a
literal, ``dict(...)``, a name bound earlier in the file, or arithmetic on numbers. What it may build is
bounded too: the file's size, the nesting depth, the number of values (every copy a name makes counts, so a
"billion laughs" of nested lists stops early) and the size of integers (so ``b = b * b`` cannot run away).
"""

from __future__ import annotations

import ast
import copy
import operator
from pathlib import Path
from typing import Any

from midog_viewer.errors import ModelError

#: Flat mmdet configs are 10-30 kB and hold a few thousand values nested less than 10 deep. Parsing is what
#: costs most on a big file (some 2 s for 450 kB on a busy CPU), hence the cap on its size.
MAX_CONFIG_BYTES = 256 << 10
MAX_VALUES = 100_000
MAX_DEPTH = 32
#: No setting needs an integer beyond 64 bits; arithmetic never builds a bigger one.
MAX_INT_BITS = 64

_BINARY_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
_UNARY_OPS = {ast.USub: operator.neg, ast.UAdd: operator.pos}


def read_mmdet_config(source: str | Path, *, text: str | None = None) -> dict[str, Any]:
    """Evaluate an mmdet Python config as data: ``name = <literal | dict(...) | earlier name | arithmetic>``."""
    label = str(source)
    if text is None:
        try:
            with Path(source).open("rb") as handle:
                raw = handle.read(MAX_CONFIG_BYTES + 1)
        except OSError as exc:
            raise ModelError(f"cannot read mmdet config {label}: {exc.strerror or exc}.") from exc
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ModelError(f"mmdet config {label} is not UTF-8 text.") from None
    if len(text.encode("utf-8", "surrogatepass")) > MAX_CONFIG_BYTES:
        raise ModelError(f"mmdet config {label} is over {MAX_CONFIG_BYTES >> 10} kB; a flat config is some 20 kB.")
    try:
        tree = ast.parse(text, filename=label)
    except SyntaxError as exc:
        raise ModelError(f"mmdet config {label} is not valid Python (line {exc.lineno}: {exc.msg}).") from None
    except (MemoryError, RecursionError):  # the parser's own stack, on absurdly deep nesting
        raise ModelError(f"mmdet config {label} nests too deeply to be read as data.") from None
    except ValueError as exc:  # null bytes, integer literals of thousands of digits
        raise ModelError(f"mmdet config {label} is not valid Python ({exc}).") from None
    evaluator = _Evaluator(label)
    for statement in tree.body:
        if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
            continue  # a docstring
        if not (isinstance(statement, ast.Assign) and len(statement.targets) == 1
                and isinstance(statement.targets[0], ast.Name)):
            raise ModelError(
                f"mmdet config {label}, line {statement.lineno}: only 'name = value' assignments can be read "
                f"as data, not {type(statement).__name__}."
            )
        evaluator.assign(statement.targets[0].id, statement.value)
    if "_base_" in evaluator.names:
        raise ModelError(
            f"mmdet config {label} inherits from _base_ files; give the flat config mmdet writes to its work_dir."
        )
    return evaluator.names


class _Evaluator:
    """Evaluates right-hand sides within the budget of :data:`MAX_VALUES` values and :data:`MAX_DEPTH` levels."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.names: dict[str, Any] = {}
        self.sizes: dict[str, tuple[int, int]] = {}  # name → (values, depth) of what it is bound to
        self.left = MAX_VALUES

    def assign(self, name: str, node: ast.expr) -> None:
        value = self.value(node, 1)
        self.names[name] = value
        self.sizes[name] = _measure(value)

    def fail(self, node: ast.AST, what: str) -> ModelError:
        line = getattr(node, "lineno", "?")
        return ModelError(f"mmdet config {self.label}, line {line}: {what} cannot be read as data.")

    def spend(self, node: ast.AST, count: int) -> None:
        self.left -= count
        if self.left < 0:
            line = getattr(node, "lineno", "?")
            raise ModelError(
                f"mmdet config {self.label}, line {line}: it builds over {MAX_VALUES:,} values (names copied "
                "into each other?); a Cascade R-CNN config holds a few thousand."
            )

    def value(self, node: ast.AST, depth: int) -> Any:
        if depth > MAX_DEPTH:
            line = getattr(node, "lineno", "?")
            raise ModelError(f"mmdet config {self.label}, line {line}: it nests deeper than {MAX_DEPTH} levels.")
        self.spend(node, 1)
        if isinstance(node, ast.Constant):
            return self.number(node, node.value)
        if isinstance(node, ast.List):
            return [self.value(e, depth + 1) for e in node.elts]
        if isinstance(node, ast.Tuple):
            return tuple(self.value(e, depth + 1) for e in node.elts)
        if isinstance(node, ast.Dict):
            if any(k is None for k in node.keys):
                raise self.fail(node, "'**' inside a dict literal")
            result = {}
            for key_node, value_node in zip(node.keys, node.values):
                key = self.value(key_node, depth + 1)
                try:
                    hash(key)
                except TypeError:
                    raise self.fail(key_node, "a dict key that is a list or dict") from None
                result[key] = self.value(value_node, depth + 1)
            return result
        if isinstance(node, ast.Name):
            if node.id not in self.names:
                raise self.fail(node, f"the name {node.id!r} (not assigned earlier in the file)")
            count, nested = self.sizes[node.id]
            self.spend(node, count)
            if depth - 1 + nested > MAX_DEPTH:
                raise ModelError(
                    f"mmdet config {self.label}, line {node.lineno}: it nests deeper than {MAX_DEPTH} levels."
                )
            return copy.deepcopy(self.names[node.id])
        if isinstance(node, ast.Call):
            if not (isinstance(node.func, ast.Name) and node.func.id == "dict") or node.args:
                raise self.fail(node, f"the call {_describe(node.func)}(...)")
            result = {}
            for keyword in node.keywords:
                value = self.value(keyword.value, depth + 1)
                if keyword.arg is None:
                    if not isinstance(value, dict):
                        raise self.fail(node, "'**' of something that is not a dict")
                    result.update(value)
                else:
                    result[keyword.arg] = value
            return result
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY_OPS:
            operand = self.value(node.operand, depth + 1)
            if not _is_number(operand):
                raise self.fail(node, "a sign on a non-number")
            return _UNARY_OPS[type(node.op)](operand)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY_OPS:
            left = self.value(node.left, depth + 1)
            right = self.value(node.right, depth + 1)
            if not (_is_number(left) and _is_number(right)):
                raise self.fail(node, "arithmetic on non-numbers")
            try:  # both operands fit in 64 bits, so the result is small enough to compute and then judge
                return self.number(node, _BINARY_OPS[type(node.op)](left, right))
            except ZeroDivisionError:
                raise self.fail(node, "a division by zero") from None
            except OverflowError:
                raise self.fail(node, "a number too large for a float") from None
        raise self.fail(node, f"a {type(node).__name__} expression")

    def number(self, node: ast.AST, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() >= MAX_INT_BITS:
            raise self.fail(node, f"an integer beyond {MAX_INT_BITS} bits")
        return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _measure(value: Any) -> tuple[int, int]:
    """How many values ``value`` holds (itself included) and how deep it nests (a scalar is 1)."""
    if isinstance(value, dict):
        parts = [_measure(v) for v in (*value.keys(), *value.values())]
    elif isinstance(value, (list, tuple)):
        parts = [_measure(v) for v in value]
    else:
        return 1, 1
    return 1 + sum(c for c, _ in parts), 1 + max((d for _, d in parts), default=0)


def _describe(node: ast.AST) -> str:
    text = ast.unparse(node)
    return text if len(text) <= 40 else text[:37] + "..."
