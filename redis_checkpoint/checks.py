"""Argument validators, one set for both stores. Each raises its store's bad-argument class
(`Checks(InvalidInput)` for checkpoints, `Checks(InvalidArgument)` for events), naming the
field, before anything is sent: a bad call fails alone and writes nothing."""

from __future__ import annotations

from enum import Enum
from typing import Any, TypeVar

from pydantic import BaseModel

from .failures import BadArgument

U64_MAX = 2**64 - 1
E = TypeVar("E", bound=Enum)
K = TypeVar("K")


class Checks:
    """Validators raising `invalid`, the calling contract's bad-argument class."""

    def __init__(self, invalid: type[BadArgument]) -> None:
        self.invalid = invalid

    def text(self, value: Any, field: str, *, empty: bool = True) -> str:
        """A string that encodes to UTF-8 (no lone surrogates); empty only if `empty`."""
        self.utf8(value, field, empty=empty)
        return str(value)

    def utf8(self, value: Any, field: str, *, empty: bool = False) -> bytes:
        """A string as UTF-8 bytes; the empty string only if `empty`."""
        if not isinstance(value, str) or not (value or empty):
            kind = "a string" if empty else "a non-empty string"
            raise self.invalid(f"{field} must be {kind}, got {value!r}")
        try:
            return value.encode()
        except UnicodeEncodeError as exc:
            raise self.invalid(f"{field} is not valid Unicode text: {exc}") from None

    def optional_text(self, value: Any, field: str) -> str | None:
        return None if value is None else self.text(value, field)

    def integer(self, value: Any, field: str, low: int, high: int = U64_MAX) -> int:
        """An int in `low..high` (no bools, floats or numeric strings)."""
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            bounds = "2^64-1" if high == U64_MAX else str(high)
            raise self.invalid(f"{field} must be an integer in {low}..{bounds}, got {value!r}")
        return value

    def seconds(self, value: Any, field: str) -> float:
        """A positive, finite number of seconds."""
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1e9:
            raise self.invalid(f"{field} must be a positive number of seconds, got {value!r}")
        return float(value)

    def ttl_ms(self, value: Any, field: str) -> int:
        """Seconds (None = no expiry) as whole milliseconds, 0 meaning none."""
        return 0 if value is None else max(1, round(self.seconds(value, field) * 1000))

    def optional_bool(self, value: Any, field: str) -> bool | None:
        if value is not None and not isinstance(value, bool):
            raise self.invalid(f"{field} must be True, False or None, got {value!r}")
        return value

    def member(self, value: Any, kind: type[E], field: str) -> E:
        """A member of enum `kind`, or its string value."""
        for member in kind:
            if value is member or (isinstance(value, str) and value == member.value):
                return member
        names = ", ".join(str(m.value) for m in kind)
        raise self.invalid(f"{field} must be one of {names}, got {value!r}")

    def items(self, value: Any, field: str) -> list[Any]:
        """An iterable's items (a string, a mapping or a model is one value, not items)."""
        if isinstance(value, str | bytes | dict | BaseModel):
            raise self.invalid(f"{field} must be an iterable of items, got {value!r:.80}")
        try:
            return list(value)
        except TypeError:
            raise self.invalid(f"{field} must be an iterable, got {value!r:.80}") from None

    def instance(self, value: Any, kind: type[K], field: str) -> K:
        if not isinstance(value, kind):
            raise self.invalid(f"{field} must be a {kind.__name__}, got {value!r}")
        return value

    def prefix(self, value: Any) -> str:
        """A key prefix: it sits inside the hash tag, so it may not contain braces."""
        prefix = self.text(value, "prefix", empty=False)
        if "{" in prefix or "}" in prefix:
            raise self.invalid(f"prefix must not contain braces, got {value!r}")
        return prefix
