"""Conditions: a small expression language that switches (and later loops) test.

``{$.input.amount} > 100 && {$.input.status} in ["PAID", "SENT"]`` is parsed once, by hand
(no ``eval``, no Python object reachable from the text), into a tree that is evaluated
against a run's data document. References are the ``{$...}`` JSONPath references of
parameters, compiled and looked up as :mod:`app.engine.params` does.

Semantics, chosen to be predictable rather than clever:

- ``==`` and ``!=`` compare JSON values: numbers by value (``1 == 1.0``), everything else by
  type and content (``true != 1``, ``"1" != 1``), arrays and objects all the way down.
- ``< <= > >=`` order two numbers, or two strings (by code point); any other pair is
  ``false`` (a missing value, ``null``, is never greater or smaller than anything).
- ``+ - * / %`` and unary ``-`` take numbers only; ``/`` divides exactly (``7 / 2`` is 3.5),
  ``%`` keeps the sign of the left operand (as in JavaScript). Anything else, a division by
  zero, or a result beyond a 64-bit integer or a double fails the evaluation.
- ``&& || !`` take booleans only, ``&&`` and ``||`` stop at the first operand that decides.
- ``x in [..]`` is membership by ``==``, ``"ab" in "cab"`` a substring, ``"k" in {..}`` a
  key; another right operand fails the evaluation.
- A condition must give ``true`` or ``false``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from app.engine.params import REFERENCE, PathError, compile_path
from app.jsontypes import JSON, is_json_number

_INT64_MAX = 2**63 - 1
_COMPILED_CACHE_SIZE = 4096


class ConditionSyntaxError(ValueError):
    """A condition does not parse; the message says where (1-based character position)."""


class ConditionError(ValueError):
    """A condition could not be evaluated on this document (a type error, a division by
    zero...); the message says why and where."""


_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<number>(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)
  | (?P<string>"(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*")
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>==|!=|<=|>=|&&|\|\||[<>!+\-*/%()\[\],])
    """,
    re.VERBOSE,
)
_WORDS: dict[str, JSON] = {"true": True, "false": False, "null": None}


@dataclass(frozen=True)
class Token:
    kind: str  # "value", "ref", "op", "end"
    text: str
    position: int  # 1-based
    value: JSON = None


def _tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    index = 0
    while index < len(text):
        position = index + 1
        if text[index] == "{":
            reference = REFERENCE.match(text, index)
            if reference is None:
                raise ConditionSyntaxError(
                    f"at position {position}: a reference is written {{$.path}}"
                )
            try:
                compile_path(reference.group(1))
            except PathError as error:
                raise ConditionSyntaxError(f"at position {position}: {error}") from None
            tokens.append(Token("ref", reference.group(1), position))
            index = reference.end()
            continue
        match = _TOKEN.match(text, index)
        if match is None:
            raise ConditionSyntaxError(_unexpected(text, index))
        kind, lexeme = match.lastgroup, match.group()
        index = match.end()
        if kind == "space":
            continue
        if kind == "number":
            tokens.append(Token("value", lexeme, position, _number(lexeme, position)))
        elif kind == "string":
            tokens.append(Token("value", lexeme, position, json.loads(lexeme)))
        elif kind == "word" and lexeme in _WORDS:
            tokens.append(Token("value", lexeme, position, _WORDS[lexeme]))
        elif kind == "word" and lexeme == "in":
            tokens.append(Token("op", lexeme, position))
        elif kind == "word":
            raise ConditionSyntaxError(
                f"at position {position}: unknown word {lexeme!r} (values are JSON literals, "
                "strings in double quotes, or references such as {$.input.x})"
            )
        else:
            tokens.append(Token("op", lexeme, position))
    tokens.append(Token("end", "", len(text) + 1))
    return tokens


def _unexpected(text: str, index: int) -> str:
    char = text[index]
    hints = {
        "=": "; compare with ==",
        "&": "; 'and' is &&",
        "|": "; 'or' is ||",
        "'": "; strings are in double quotes",
        '"': " (an unterminated string, or a bad escape)",
    }
    return f"at position {index + 1}: unexpected {char!r}{hints.get(char, '')}"


def _number(lexeme: str, position: int) -> int | float:
    value: int | float
    if any(marker in lexeme for marker in ".eE"):
        value = float(lexeme)
        if not math.isfinite(value):
            raise ConditionSyntaxError(f"at position {position}: {lexeme} is too large")
    else:
        value = int(lexeme)
        if value > _INT64_MAX:
            raise ConditionSyntaxError(f"at position {position}: {lexeme} is beyond 64 bits")
    return value


# -- the tree ----------------------------------------------------------------------------------

Document = dict[str, Any]


class Node:
    position: int
    depth: int

    def evaluate(self, document: Document) -> JSON:
        raise NotImplementedError


@dataclass(frozen=True)
class Literal(Node):
    value: JSON
    position: int
    depth: int = 1

    def evaluate(self, document: Document) -> JSON:
        return self.value


@dataclass(frozen=True)
class Reference(Node):
    path: str
    position: int
    depth: int = 1

    def evaluate(self, document: Document) -> JSON:
        try:
            matches = compile_path(self.path).find(document)
        except Exception:  # a path that evaluates on the probe may still fail on data
            return None
        found: JSON = matches[0].value if matches else None
        return found


@dataclass(frozen=True)
class ArrayOf(Node):
    items: tuple[Node, ...]
    position: int
    depth: int

    def evaluate(self, document: Document) -> JSON:
        return [item.evaluate(document) for item in self.items]


@dataclass(frozen=True)
class Unary(Node):
    operator: str
    operand: Node
    position: int
    depth: int

    def evaluate(self, document: Document) -> JSON:
        value = self.operand.evaluate(document)
        if self.operator == "!":
            return not _boolean(value, "!", self.position)
        if not is_json_number(value):
            raise _error(self.position, f"- needs a number, not {type_name(value)}")
        return _checked(-value, self.position)


@dataclass(frozen=True)
class Logical(Node):
    """``a && b && c`` (or ``||``) as one node: long chains stay shallow."""

    operator: str
    operands: tuple[Node, ...]
    position: int
    depth: int

    def evaluate(self, document: Document) -> JSON:
        stop = self.operator == "||"  # the value that decides
        for operand in self.operands:
            if _boolean(operand.evaluate(document), self.operator, operand.position) is stop:
                return stop
        return not stop


@dataclass(frozen=True)
class Binary(Node):
    operator: str
    left: Node
    right: Node
    position: int
    depth: int

    def evaluate(self, document: Document) -> JSON:
        left = self.left.evaluate(document)
        right = self.right.evaluate(document)
        return _BINARY[self.operator](left, right, self.position)


# -- operators -----------------------------------------------------------------------------------


def type_name(value: JSON) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _error(position: int, message: str) -> ConditionError:
    return ConditionError(f"at position {position}: {message}")


def _boolean(value: JSON, operator: str, position: int) -> bool:
    if not isinstance(value, bool):
        raise _error(position, f"{operator} needs true or false, not {type_name(value)}")
    return value


def json_equal(left: JSON, right: JSON) -> bool:
    """Equality of JSON values: numbers by value, everything else by type and content."""
    if is_json_number(left) and is_json_number(right):
        return bool(left == right)
    if type(left) is not type(right):
        return False
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(map(json_equal, left, right))
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(json_equal(left[k], right[k]) for k in left)
    return bool(left == right)


def _ordered(test: Callable[[Any, Any], bool]) -> Callable[[JSON, JSON, int], JSON]:
    def compare(left: JSON, right: JSON, position: int) -> JSON:
        if is_json_number(left) and is_json_number(right):
            return test(left, right)
        if isinstance(left, str) and isinstance(right, str):
            return test(left, right)
        return False

    return compare


def _checked(value: int | float, position: int) -> int | float:
    if isinstance(value, float) and not math.isfinite(value):
        raise _error(position, "the result is beyond a double")
    if isinstance(value, int) and abs(value) > _INT64_MAX:
        raise _error(position, "the result is beyond a 64-bit integer")
    return value


def _arithmetic(
    operator: str, compute: Callable[[Any, Any], int | float]
) -> Callable[[JSON, JSON, int], JSON]:
    def apply(left: JSON, right: JSON, position: int) -> JSON:
        if not (is_json_number(left) and is_json_number(right)):
            raise _error(
                position,
                f"{operator} needs two numbers, not {type_name(left)} and {type_name(right)}",
            )
        if operator in "/%" and right == 0:
            raise _error(position, "division by zero")
        return _checked(compute(left, right), position)

    return apply


def _remainder(left: int | float, right: int | float) -> int | float:
    if isinstance(left, int) and isinstance(right, int):
        rest = abs(left) % abs(right)
        return rest if left >= 0 else -rest
    return math.fmod(left, right)


def _member(left: JSON, right: JSON, position: int) -> JSON:
    if isinstance(right, list):
        return any(json_equal(left, item) for item in right)
    if isinstance(right, str | dict):
        if not isinstance(left, str):
            raise _error(position, f"in {type_name(right)} needs a string, not {type_name(left)}")
        return left in right
    raise _error(position, f"in needs an array, a string or an object, not {type_name(right)}")


_BINARY: dict[str, Callable[[JSON, JSON, int], JSON]] = {
    "==": lambda left, right, _: json_equal(left, right),
    "!=": lambda left, right, _: not json_equal(left, right),
    "<": _ordered(lambda left, right: left < right),
    "<=": _ordered(lambda left, right: left <= right),
    ">": _ordered(lambda left, right: left > right),
    ">=": _ordered(lambda left, right: left >= right),
    "in": _member,
    "+": _arithmetic("+", lambda left, right: left + right),
    "-": _arithmetic("-", lambda left, right: left - right),
    "*": _arithmetic("*", lambda left, right: left * right),
    "/": _arithmetic("/", lambda left, right: left / right),
    "%": _arithmetic("%", _remainder),
}

_COMPARISONS = frozenset({"==", "!=", "<", "<=", ">", ">=", "in"})
_TERMS = frozenset({"+", "-"})
_FACTORS = frozenset({"*", "/", "%"})


# -- the parser ----------------------------------------------------------------------------------


class _Parser:
    """Recursive descent, one function per precedence level, loosest first:
    ``||``, ``&&``, comparisons (``== != < <= > >= in``, which do not chain), ``+ -``,
    ``* / %``, unary ``! -``, then literals, references, ``( )`` and ``[ ]``."""

    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.index = 0

    def parse(self) -> Node:
        if self.peek().kind == "end":
            raise ConditionSyntaxError("the condition is empty")
        node = self.expression()
        token = self.peek()
        if token.kind != "end":
            raise ConditionSyntaxError(f"at position {token.position}: unexpected {token.text!r}")
        return node

    def peek(self) -> Token:
        return self.tokens[self.index]

    def take(self) -> Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def accept(self, operators: frozenset[str]) -> Token | None:
        token = self.peek()
        if token.kind == "op" and token.text in operators:
            self.index += 1
            return token
        return None

    def expect(self, operator: str, opened: Token) -> None:
        token = self.take()
        if token.kind != "op" or token.text != operator:
            found = "the end" if token.kind == "end" else repr(token.text)
            raise ConditionSyntaxError(
                f"at position {token.position}: expected {operator!r} to close the "
                f"{opened.text!r} at position {opened.position}, found {found}"
            )

    def expression(self) -> Node:
        return self.logical("||", self.conjunction)

    def conjunction(self) -> Node:
        return self.logical("&&", self.comparison)

    def logical(self, operator: str, operand: Callable[[], Node]) -> Node:
        first = operand()
        operands = [first]
        while self.accept(frozenset({operator})):
            operands.append(operand())
        if len(operands) == 1:
            return first
        depth = 1 + max(node.depth for node in operands)
        return Logical(operator, tuple(operands), first.position, depth)

    def comparison(self) -> Node:
        left = self.term()
        token = self.accept(_COMPARISONS)
        if token is None:
            return left
        right = self.term()
        if again := self.accept(_COMPARISONS):
            raise ConditionSyntaxError(
                f"at position {again.position}: comparisons do not chain; use parentheses "
                "and && to combine them"
            )
        return self.binary(token, left, right)

    def term(self) -> Node:
        return self.left_associative(_TERMS, self.factor)

    def factor(self) -> Node:
        return self.left_associative(_FACTORS, self.unary)

    def left_associative(self, operators: frozenset[str], operand: Callable[[], Node]) -> Node:
        node = operand()
        while token := self.accept(operators):
            node = self.binary(token, node, operand())
        return node

    def binary(self, token: Token, left: Node, right: Node) -> Node:
        depth = 1 + max(left.depth, right.depth)
        return Binary(token.text, left, right, token.position, depth)

    def unary(self) -> Node:
        token = self.accept(frozenset({"!", "-"}))
        if token is None:
            return self.primary()
        operand = self.unary()
        return Unary(token.text, operand, token.position, operand.depth + 1)

    def primary(self) -> Node:
        token = self.take()
        if token.kind == "value":
            return Literal(token.value, token.position)
        if token.kind == "ref":
            return Reference(token.text, token.position)
        if token.kind == "op" and token.text == "(":
            inner = self.expression()
            self.expect(")", token)
            return inner
        if token.kind == "op" and token.text == "[":
            return self.array(token)
        found = "the end" if token.kind == "end" else repr(token.text)
        raise ConditionSyntaxError(f"at position {token.position}: expected a value, found {found}")

    def array(self, opened: Token) -> Node:
        items: list[Node] = []
        if not self.accept(frozenset({"]"})):
            items.append(self.expression())
            while self.accept(frozenset({","})):
                items.append(self.expression())
            self.expect("]", opened)
        depth = 1 + max((item.depth for item in items), default=0)
        return ArrayOf(tuple(items), opened.position, depth)


@dataclass(frozen=True)
class Condition:
    text: str
    root: Node

    @property
    def depth(self) -> int:
        """Operators and arrays nested in one another, counting the values at the bottom:
        ``1 + 2`` is 2 deep, ``!(a && b)`` 3 (registration bounds it)."""
        return self.root.depth

    def value(self, document: Document) -> JSON:
        """The expression's value on ``document``; raises :class:`ConditionError`."""
        try:
            return self.root.evaluate(document)
        except RecursionError:
            raise ConditionError("nested too deeply to evaluate") from None

    def test(self, document: Document) -> bool:
        """True or false on ``document``; raises :class:`ConditionError` for anything else."""
        value = self.value(document)
        if not isinstance(value, bool):
            raise ConditionError(f"the condition gave {type_name(value)}, not true or false")
        return value


@lru_cache(maxsize=_COMPILED_CACHE_SIZE)
def compile_condition(text: str) -> Condition:
    """Parse ``text`` once (cached). Raises :class:`ConditionSyntaxError` saying where the
    text is wrong."""
    try:
        return Condition(text, _Parser(text).parse())
    except RecursionError:
        raise ConditionSyntaxError("nested too deeply to parse") from None
