"""Symbolic sizes: `Dim` (a named size with bounds) and `Size`, an integer expression of such names.

A `Size` is a constant plus a sum of integer multiples of terms; a term is a product of factors,
each a symbol name or the floor of a Size divided by a positive integer. Arithmetic keeps that form
canonical (like terms merged, multiples of a divisor taken out of a floor), so equal constructions
compare equal and print alike (`(T-1)//2+1`, `2*T`, `H*W`), and an expression without symbols is a
plain `int`: a shape without symbols stays a tuple of ints.

Shape rules are written once, for ints: with Sizes in the shapes the same code builds the output's
expressions. A comparison (`padded < extent`, `max(d, 1)`) is decided at the generic point, each
symbol at a large value (or its bound `max`): the branch long inputs take. Where a rule's answer for
short inputs differs from that (an empty output, a pad wider than the input, a pool window past the
end), `convc.shape_check` finds the smallest sizes from which the expressions hold and makes them
preconditions that every call checks.
"""
from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Union

from .errors import ConvcError

Factor = Union[str, "FloorDiv"]
Term = tuple  # sorted factors; () is the constant term
Extent = Union[int, "Size"]
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
GENERIC_BASE = 1 << 13  # a symbol's value where comparisons are decided, unless its bound is lower


@dataclass(frozen=True)
class Dim:
    """A symbolic size: its name in the IR and the range of values a call may give it."""

    name: str
    min: int = 1
    max: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not NAME.match(self.name):
            raise ConvcError(f"Dim: name={self.name!r} must be an identifier (letters, digits, _)")
        for field, value in (("min", self.min), ("max", self.max)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ConvcError(f"Dim {self.name}: {field}={value!r} must be an int")
        if self.min < 0:
            raise ConvcError(f"Dim {self.name}: min={self.min} must not be negative")
        if self.max is not None and self.max < self.min:
            raise ConvcError(f"Dim {self.name}: max={self.max} is below min={self.min}")

    def __str__(self) -> str:
        return self.name


_generic: dict[str, int] = {}


def generic_value(name: str) -> int:
    """The value at which comparisons involving `name` are decided."""
    if name in _generic:
        return _generic[name]
    return GENERIC_BASE + 2 * (zlib.crc32(name.encode()) % 2048) + 1  # distinct, odd: no accidental ties


@contextmanager
def generic_values(dims: dict[str, Dim]) -> Iterator[None]:
    """Decide comparisons within the block at values inside the dims' bounds."""
    saved = dict(_generic)
    for name, dim in dims.items():
        value = generic_value(name)
        _generic[name] = value if dim.max is None else min(value, dim.max)
    try:
        yield
    finally:
        _generic.clear()
        _generic.update(saved)


def _factor_key(factor: Factor) -> tuple:
    return (0, factor) if isinstance(factor, str) else (1, str(factor))


def _term_key(term: Term) -> tuple:
    return tuple(_factor_key(f) for f in term)


@dataclass(frozen=True)
class FloorDiv:
    """floor(numerator / divisor), a numerator that no multiple of the divisor can be taken out of."""

    numerator: Size
    divisor: int

    def evaluate(self, values: dict[str, int]) -> int:
        return self.numerator.evaluate(values) // self.divisor

    def __str__(self) -> str:
        return f"({self.numerator})//{self.divisor}"


def _make(terms: dict[Term, int]) -> Extent:
    terms = {t: c for t, c in terms.items() if c}
    constant = terms.pop((), 0)
    if not terms:
        return constant
    return Size(tuple(sorted(terms.items(), key=lambda item: _term_key(item[0]))), constant)


def _terms(value: Extent) -> dict[Term, int]:
    if isinstance(value, Size):
        terms = dict(value.terms)
        if value.constant:
            terms[()] = value.constant
        return terms
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"a symbolic size combines with ints and sizes, not {type(value).__name__}")
    return {(): value} if value else {}


def symbol(name: str) -> Size:
    """The Size of one symbol."""
    return Size((((name,), 1),), 0)


class Size:
    """An integer expression of symbolic sizes (see the module docstring); immutable and hashable."""

    __slots__ = ("_hash", "constant", "terms")

    def __init__(self, terms: tuple, constant: int) -> None:
        self.terms, self.constant = terms, constant
        self._hash = hash((terms, constant))

    # arithmetic -----------------------------------------------------------------------------------
    def __add__(self, other: Extent) -> Extent:
        terms = _terms(self)
        for term, coefficient in _terms(other).items():
            terms[term] = terms.get(term, 0) + coefficient
        return _make(terms)

    __radd__ = __add__

    def __neg__(self) -> Extent:
        return _make({t: -c for t, c in _terms(self).items()})

    def __sub__(self, other: Extent) -> Extent:
        return self + (-other if isinstance(other, Size) else -_checked_int(other))

    def __rsub__(self, other: Extent) -> Extent:
        return -self + other

    def __mul__(self, other: Extent) -> Extent:
        product: dict[Term, int] = {}
        for a, x in _terms(self).items():
            for b, y in _terms(other).items():
                term = tuple(sorted(a + b, key=_factor_key))
                product[term] = product.get(term, 0) + x * y
        return _make(product)

    __rmul__ = __mul__

    def __floordiv__(self, other: Extent) -> Extent:
        if isinstance(other, Size):
            return _exact_quotient(self, other)
        divisor = _checked_int(other)
        if divisor <= 0:
            raise ConvcError(f"symbolic size {self}: floor division by {divisor}; only by a positive int")
        whole: dict[Term, int] = {}
        rest: dict[Term, int] = {}
        for term, coefficient in _terms(self).items():
            whole[term], rest[term] = divmod(coefficient, divisor)
        remainder = _make(rest)
        if isinstance(remainder, Size):
            inner = remainder.terms[0][0][0] if len(remainder.terms) == 1 else None
            if isinstance(inner, FloorDiv) and remainder.terms[0] == ((inner,), 1):
                # floor((floor(n / a) + c) / d) = floor((n + c a) / (a d)) for integers
                nested = (inner.numerator + remainder.constant * inner.divisor) // (inner.divisor * divisor)
                return _make(whole) + nested
            whole[(FloorDiv(remainder, divisor),)] = 1
        return _make(whole)  # an int remainder is within [0, divisor): its floor is 0

    def __rfloordiv__(self, other: Extent) -> Extent:
        raise ConvcError(f"{other} // {self}: division by a symbolic size is not supported")

    def __mod__(self, other: Extent) -> Extent:
        return self - (self // other) * other

    # comparisons: structural equality, order at the generic point --------------------------------
    def __eq__(self, other: object) -> bool:
        return isinstance(other, Size) and self.terms == other.terms and self.constant == other.constant

    def __hash__(self) -> int:
        return self._hash

    def generic(self) -> int:
        """The value at the generic point."""
        return self.evaluate({name: generic_value(name) for name in self.symbols()})

    def __lt__(self, other: Extent) -> bool:
        return self.generic() < generic_of(other)

    def __le__(self, other: Extent) -> bool:
        return self.generic() <= generic_of(other)

    def __gt__(self, other: Extent) -> bool:
        return self.generic() > generic_of(other)

    def __ge__(self, other: Extent) -> bool:
        return self.generic() >= generic_of(other)

    def __bool__(self) -> bool:
        return self.generic() != 0

    def __int__(self) -> int:
        raise ConvcError(f"symbolic size {self} has no fixed value here")

    # values and text ------------------------------------------------------------------------------
    def symbols(self) -> set[str]:
        names: set[str] = set()
        for term, _ in self.terms:
            for factor in term:
                names |= {factor} if isinstance(factor, str) else factor.numerator.symbols()
        return names

    def evaluate(self, values: dict[str, int]) -> int:
        """The value for the symbols' values (every symbol of the expression must have one)."""
        total = self.constant
        for term, coefficient in self.terms:
            product = coefficient
            for factor in term:
                if isinstance(factor, str):
                    if factor not in values:
                        raise ConvcError(f"symbolic size {self}: no value for {factor}")
                    product *= values[factor]
                else:
                    product *= factor.evaluate(values)
            total += product
        return total

    def __str__(self) -> str:
        text = ""
        for term, coefficient in self.terms:
            magnitude = abs(coefficient)
            alone = len(term) == 1 and coefficient == 1  # a floor elsewhere is bracketed: a*b//c reads (a*b)//c
            body = "*".join(str(f) if isinstance(f, str) or alone else f"({f})" for f in term)
            piece = body if magnitude == 1 else f"{magnitude}*{body}"
            text += ("-" if coefficient < 0 else "+" if text else "") + piece
        if self.constant:
            text += f"{self.constant:+d}"
        return text

    def __repr__(self) -> str:
        return f"Size({self})"


def _checked_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"a symbolic size combines with ints and sizes, not {type(value).__name__}")
    return value


def generic_of(value: Extent) -> int:
    """An extent's value at the generic point (an int is itself)."""
    return value.generic() if isinstance(value, Size) else _checked_int(value)


def _exact_quotient(numerator: Size, divisor: Size) -> Extent:
    """numerator / divisor where the divisor is one term that divides every term of the numerator
    (C*T / T, say); anything else is a ConvcError."""
    if len(divisor.terms) != 1 or divisor.constant:
        raise ConvcError(f"({numerator}) // ({divisor}): only division by a single product of sizes is supported")
    (factors, scale), = divisor.terms
    quotient: dict[Term, int] = {}
    for term, coefficient in _terms(numerator).items():
        rest = list(term)
        for factor in factors:
            if factor not in rest:
                raise ConvcError(f"({numerator}) // ({divisor}): {divisor} does not divide {numerator}")
            rest.remove(factor)
        if coefficient % scale:
            raise ConvcError(f"({numerator}) // ({divisor}): {divisor} does not divide {numerator}")
        quotient[tuple(rest)] = coefficient // scale
    return _make(quotient)


def symbols_of(shape: tuple) -> set[str]:
    names: set[str] = set()
    for extent in shape:
        if isinstance(extent, Size):
            names |= extent.symbols()
    return names


def substitute(extent: Extent, values: dict[str, int]) -> int:
    """The int an extent takes for the symbols' values."""
    return extent.evaluate(values) if isinstance(extent, Size) else extent


# text -------------------------------------------------------------------------------------------
_EXPRESSION_TOKEN = re.compile(r"\s*(//|[-+*()]|[0-9]+|[A-Za-z_][A-Za-z0-9_]*)")


def tokenize(pattern: re.Pattern[str], text: str, unreadable: Callable[[str], ConvcError]) -> list[str]:
    """The first group of `pattern` at each match, from the start of `text` (stripped) to its end;
    `unreadable(rest of the text)` is raised where nothing matches."""
    tokens, position = [], 0
    text = text.strip()
    while position < len(text):
        match = pattern.match(text, position)
        if not match:
            raise unreadable(text[position:])
        tokens.append(match.group(1))
        position = match.end()
    return tokens


def parse_extent(text: str) -> Extent:
    """An extent from its printed form: an int, a name, or an expression of + - * // and ()."""
    text = text.strip()
    tokens = tokenize(_EXPRESSION_TOKEN, text, lambda rest: ConvcError(f"cannot read the size {text!r} at {rest[:10]!r}"))
    if not tokens:
        raise ConvcError("empty size")

    def expect(token: str) -> None:
        if not tokens or tokens.pop(0) != token:
            raise ConvcError(f"cannot read the size {text!r}: expected {token!r}")

    def atom() -> Extent:
        if not tokens:
            raise ConvcError(f"cannot read the size {text!r}: it ends early")
        token = tokens.pop(0)
        if token == "(":
            value = expression()
            expect(")")
            return value
        if token == "-":
            return -atom()
        if token.isdigit():
            return int(token)
        if NAME.match(token):
            return symbol(token)
        raise ConvcError(f"cannot read the size {text!r}: unexpected {token!r}")

    def product() -> Extent:
        value = atom()
        while tokens and tokens[0] in ("*", "//"):
            operator = tokens.pop(0)
            right = atom()
            if operator == "*":
                value = value * right
            elif isinstance(right, Size) or right <= 0:
                raise ConvcError(f"cannot read the size {text!r}: division by {right}")
            else:
                value = value // right
        return value

    def expression() -> Extent:
        value = product()
        while tokens and tokens[0] in ("+", "-"):
            value = value + product() if tokens.pop(0) == "+" else value - product()
        return value

    result = expression()
    if tokens:
        raise ConvcError(f"cannot read the size {text!r}: unexpected {tokens[0]!r}")
    return result
