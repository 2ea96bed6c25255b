"""Search dimensions as written in an experiment YAML, and their Optuna distributions.

The YAML spells a dimension the same way everywhere:

- a list            -> :class:`Choice` (categorical choices),
- a mapping ``{low, high[, step][, log]}`` -> :class:`IntRange` / :class:`FloatRange`
  (bounds inclusive),
- a scalar          -> :class:`Fixed` (not searched).

Each key of a space part declares a :class:`KeySpec` (type, domain, default, unit) so the
same rules validate a fixed value, every choice and both range bounds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)


class SpaceError(ValueError):
    """A search-space value is invalid. ``problems`` holds ``(dotted.key, message)`` pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{k}: {m}" for k, m in problems))


@dataclass(frozen=True)
class Fixed:
    value: Any


@dataclass(frozen=True)
class Choice:
    choices: tuple[Any, ...]


@dataclass(frozen=True)
class IntRange:
    low: int
    high: int
    step: int = 1
    log: bool = False


@dataclass(frozen=True)
class FloatRange:
    low: float
    high: float
    step: float | None = None
    log: bool = False


Dim = Fixed | Choice | IntRange | FloatRange


@dataclass(frozen=True)
class KeySpec:
    """What one space key accepts.

    Attributes:
        kind: ``int``, ``float``, ``str`` or ``bool`` (an int is accepted where a float is).
        default: the value used when the key is absent (a scalar, a list or a range mapping,
            written as in YAML).
        check: returns a message when a single value is outside the domain, else ``None``.
        doc: one line for ``experiments/README.md`` and error messages.
        nullable: ``null`` (``None``) is also a value of the key (e.g. "same as the others").
    """

    kind: str
    default: Any
    check: Callable[[Any], str | None] | None = None
    doc: str = ""
    nullable: bool = False


def type_ok(kind: str, v: Any) -> bool:
    """Whether ``v`` is a YAML value of ``kind`` (no bool for numbers, finite floats)."""
    if kind == "bool":
        return isinstance(v, bool)
    if isinstance(v, bool):
        return False
    if kind == "int":
        return isinstance(v, int)
    if kind == "float":
        return isinstance(v, (int, float)) and math.isfinite(v)
    if kind == "str":
        return isinstance(v, str)
    raise AssertionError(kind)


def _check_value(spec: KeySpec, v: Any, path: str, problems: list[tuple[str, str]]) -> bool:
    if v is None and spec.nullable:
        return True
    if not type_ok(spec.kind, v):
        problems.append((path, f"expected {spec.kind}, got {v!r} ({type(v).__name__})"))
        return False
    if spec.check is not None:
        msg = spec.check(v)
        if msg:
            problems.append((path, f"{msg}, got {v!r}"))
            return False
    return True


def parse_dim(raw: Any, spec: KeySpec, path: str, problems: list[tuple[str, str]]) -> Dim:
    """Turn a YAML value into a :class:`Dim`, appending every problem found to ``problems``."""
    if isinstance(raw, list):
        if not raw:
            problems.append((path, "an empty list of choices"))
            return Fixed(spec.default)
        ok = all([_check_value(spec, v, f"{path}[{i}]", problems) for i, v in enumerate(raw)])
        if ok and len(set(map(repr, raw))) != len(raw):
            problems.append((path, f"duplicate choices in {raw!r}"))
        return Choice(tuple(raw)) if len(raw) > 1 else Fixed(raw[0])
    if isinstance(raw, Mapping):
        if spec.kind not in ("int", "float"):
            problems.append((path, f"a range needs a numeric key; {spec.kind} takes a list"))
            return Fixed(spec.default)
        known = {"low", "high", "step", "log"}
        unknown = sorted(set(map(str, raw)) - known)
        if unknown:
            problems.append((path, f"unknown range keys {unknown}; known: low, high, step, log"))
        missing = [k for k in ("low", "high") if k not in raw]
        if missing:
            problems.append((path, f"a range needs {' and '.join(missing)}"))
            return Fixed(spec.default)
        low, high = raw["low"], raw["high"]
        step, log = raw.get("step"), raw.get("log", False)
        n = len(problems)
        _check_value(spec, low, f"{path}.low", problems)
        _check_value(spec, high, f"{path}.high", problems)
        if not isinstance(log, bool):
            problems.append((f"{path}.log", f"expected true or false, got {log!r}"))
        if step is not None and (not type_ok(spec.kind, step) or step <= 0):
            problems.append((f"{path}.step", f"expected a positive {spec.kind}, got {step!r}"))
        if len(problems) > n:
            return Fixed(spec.default)
        if low > high:
            problems.append((path, f"low <= high must hold, but got (low={low}, high={high})"))
            return Fixed(spec.default)
        if log and step is not None and (step != 1 or spec.kind == "float"):
            problems.append((path, "log and step cannot be combined"))
        if spec.kind == "int" and spec.check is not None and high - low <= 100_000:
            # keys with a discrete domain (bits, kernel sizes): every point must be allowed
            bad = [v for v in range(int(low), int(high) + 1, int(step or 1)) if spec.check(v)]
            if bad:
                problems.append((path, f"the range holds values outside the domain: {bad[:8]} "
                                 "(write the allowed values as a list)"))
        if log and low <= 0:
            problems.append((path, f"a log range needs low > 0, got low={low}"))
        if spec.kind == "int":
            return IntRange(int(low), int(high), int(step or 1), bool(log))
        return FloatRange(float(low), float(high), None if step is None else float(step), log)
    _check_value(spec, raw, path, problems)
    return Fixed(raw)


def distribution(dim: Dim) -> BaseDistribution | None:
    """The Optuna distribution of a searched dimension, ``None`` for a fixed one."""
    if isinstance(dim, Fixed):
        return None
    if isinstance(dim, Choice):
        return CategoricalDistribution(dim.choices)
    if isinstance(dim, IntRange):
        return IntDistribution(dim.low, dim.high, log=dim.log, step=dim.step)
    return FloatDistribution(dim.low, dim.high, log=dim.log, step=dim.step)


def contains(dim: Dim, value: Any) -> bool:
    """Whether ``value`` is a point of ``dim`` (used to check user-given parameters)."""
    if isinstance(dim, Fixed):
        return value == dim.value
    if isinstance(dim, Choice):
        return value in dim.choices
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if not dim.low <= value <= dim.high:
        return False
    if isinstance(dim, IntRange):
        return float(value).is_integer() and (int(value) - dim.low) % dim.step == 0
    return True


def extremes(dim: Dim) -> list[Any]:
    """Every value a cross-key rule must consider: choices, or the two bounds of a range."""
    if isinstance(dim, Fixed):
        return [dim.value]
    if isinstance(dim, Choice):
        return list(dim.choices)
    return [dim.low, dim.high]


def grid_values(dim: Dim) -> list[Any] | None:
    """Every value of a finite dimension in order (choices, stepped ranges), else ``None``."""
    if isinstance(dim, Fixed):
        return [dim.value]
    if isinstance(dim, Choice):
        return list(dim.choices)
    if isinstance(dim, IntRange) and not dim.log:
        return list(range(dim.low, dim.high + 1, dim.step))
    if isinstance(dim, FloatRange) and dim.step is not None and not dim.log:
        n = int(round((dim.high - dim.low) / dim.step))
        return [round(dim.low + i * dim.step, 12) for i in range(n + 1)]
    return None


def middle(dim: Dim) -> Any:
    """The middle of a dimension: the middle choice (the upper one of an even count), the
    geometric middle of a log range, else the arithmetic one, snapped to its step."""
    if isinstance(dim, Fixed):
        return dim.value
    if isinstance(dim, Choice):
        return dim.choices[len(dim.choices) // 2]
    mid = (dim.low * dim.high) ** 0.5 if dim.log else (dim.low + dim.high) / 2
    if isinstance(dim, IntRange):
        return min(dim.high, dim.low + round((mid - dim.low) / dim.step) * dim.step)
    if dim.step is not None:
        return min(dim.high, round(dim.low + round((mid - dim.low) / dim.step) * dim.step, 12))
    return float(mid)


def draw(dim: Dim, rng: Any, n: int) -> list[Any]:
    """``n`` values of ``dim`` drawn uniformly (log-uniformly for a log range) with the numpy
    generator ``rng``."""
    if isinstance(dim, Fixed):
        return [dim.value] * n
    if isinstance(dim, Choice):
        return [dim.choices[i] for i in rng.integers(0, len(dim.choices), n)]
    values = grid_values(dim)
    if values is not None:
        return [values[i] for i in rng.integers(0, len(values), n)]
    import math

    lo, hi = (math.log(dim.low), math.log(dim.high)) if dim.log else (dim.low, dim.high)
    u = rng.uniform(lo, hi, n)
    x = [math.exp(v) if dim.log else float(v) for v in u]
    if isinstance(dim, IntRange):  # a log int range
        return [min(dim.high, max(dim.low, int(round(v)))) for v in x]
    return [min(dim.high, max(dim.low, v)) for v in x]


def to_yaml(dim: Dim) -> Any:
    """Write a dimension back in the YAML spelling (for the resolved experiment)."""
    if isinstance(dim, Fixed):
        return dim.value
    if isinstance(dim, Choice):
        return list(dim.choices)
    out: dict[str, Any] = {"low": dim.low, "high": dim.high}
    if dim.step not in (None, 1) or isinstance(dim, FloatRange) and dim.step is not None:
        out["step"] = dim.step
    if dim.log:
        out["log"] = True
    return out


def in_set(allowed: tuple[Any, ...]) -> Callable[[Any], str | None]:
    return lambda v: None if v in allowed else f"must be one of {list(allowed)}"


def at_least(lo: float) -> Callable[[Any], str | None]:
    return lambda v: None if v >= lo else f"must be >= {lo}"


def positive(v: Any) -> str | None:
    return None if v > 0 else "must be > 0"


def between(lo: float, hi: float) -> Callable[[Any], str | None]:
    return lambda v: None if lo <= v <= hi else f"must be in [{lo}, {hi}]"
