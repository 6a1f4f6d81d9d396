"""Argument checks shared by every public entry point.

Each check names the argument, shows the value and says what was expected, so
that bad input fails at the boundary with a message a user can act on. NumPy
scalars count as the Python numbers they hold; booleans never count as numbers.
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Iterable
from typing import Any

INT64_MAX = 2**63 - 1


def integer(value: Any, name: str, *, min: int | None = None, max: int | None = INT64_MAX) -> int:
    """``value`` as a Python int; TypeError/ValueError naming ``name`` unless it is an integer in [min, max]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an integer, got {value!r} ({type(value).__name__})")
    v = int(value)
    if min is not None and v < min:
        raise ValueError(f"{name}: expected an integer >= {min}, got {v}")
    if max is not None and v > max:
        bound = "2**63 - 1" if max == INT64_MAX else str(max)
        raise ValueError(f"{name}: expected an integer <= {bound}, got {v}")
    return v


def optional_integer(value: Any, name: str, *, min: int | None = None) -> int | None:
    """None, or :func:`integer`."""
    return None if value is None else integer(value, name, min=min)


def number(value: Any, name: str, *, min: float | None = None, max: float | None = None,
           min_exclusive: bool = False) -> float:
    """``value`` as a finite float in [min, max] (or (min, max] with ``min_exclusive``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a number, got {value!r} ({type(value).__name__})")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name}: expected a finite number, got {v}")
    if min is not None and (v <= min if min_exclusive else v < min):
        raise ValueError(f"{name}: expected a number {'>' if min_exclusive else '>='} {min:g}, got {v:g}")
    if max is not None and v > max:
        raise ValueError(f"{name}: expected a number <= {max:g}, got {v:g}")
    return v


def boolean(value: Any, name: str) -> bool:
    """``value`` if it is a bool (or a NumPy bool); strings such as "yes" are refused."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return bool(value)
    raise TypeError(f"{name}: expected true or false, got {value!r} ({type(value).__name__})")


def string(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name}: expected a string, got {value!r} ({type(value).__name__})")
    return value


def choice(value: Any, name: str, options: Iterable[str]) -> str:
    """``value`` if it is one of ``options``; else ValueError with a close-match hint."""
    options = list(options)
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name}: expected one of {options}, got {value!r}{did_you_mean(value, options)}")
    return value


def did_you_mean(value: Any, options: Iterable[str]) -> str:
    """'; did you mean 'x'?' when ``value`` is close to one of ``options``, else ''."""
    if not isinstance(value, str):
        return ""
    close = difflib.get_close_matches(value, list(options), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def unknown_keys(given: Iterable[str], known: Iterable[str], where: str) -> None:
    """ValueError naming the first key of ``given`` not in ``known`` (with a close-match hint)."""
    known = list(known)
    for key in given:
        if key not in known:
            raise ValueError(f"{where}: unknown key {key!r}{did_you_mean(key, known)} (expected some of {known})")
