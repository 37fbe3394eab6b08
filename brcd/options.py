"""Typed settings: the one rule for the numbers of a config, and the options a registry entry declares.

**The numeric rule** (every number of a config, whichever key holds it):

- an integer setting takes a whole number: ``16``, ``16.0`` and ``"16"`` are
  all read as ``16`` (a whole-number float is accepted as its integer;
  Snakemake's ``--config 'bits=[16]'`` passes list items as strings, so a
  string that holds a number counts as that number); ``16.5``, ``"abc"``,
  ``true`` are errors;
- a number setting takes a finite number (``.inf`` and ``.nan`` are errors);
- a true/false setting takes ``true``/``false`` (or those words as strings);
- each is checked against its range, and the error names the key, the value
  and the allowed form.

The JSON schema of a config (:mod:`brcd.config`) and the options every
registry entry declares (distillation losses, hashing objectives, hash heads,
datasets: :class:`Options`) both apply it through :func:`as_int`,
:func:`as_number` and :func:`as_flag`. This module imports only
:mod:`brcd.errors`.
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from brcd.errors import ConfigError

#: the largest seed: numpy, torch and faiss (a C int) all take it
MAX_SEED = 2**31 - 1


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_number(value: Any) -> int | float | None:
    """``value`` as a number when it is one or a string holding one (``"16"``, ``"0.5"``), else None;
    a number stays as it is (an int is not made a float), so a config's values keep their hashes."""
    if _is_number(value):
        return value
    if isinstance(value, str):
        text = value.strip()
        for parse in (int, float):
            try:
                return parse(text)
            except ValueError:
                continue
    return None


def whole_number(value: Any) -> int | None:
    """``value`` as an int when it is a whole number (``16``, ``16.0``, ``"16"``), else None."""
    number = parse_number(value)
    if isinstance(number, float) and math.isfinite(number) and number.is_integer():
        return int(number)
    return number if isinstance(number, int) else None


def finite_number(value: Any) -> int | float | None:
    """``value`` as a finite number (see :func:`parse_number`), else None."""
    number = parse_number(value)
    return number if number is not None and math.isfinite(number) else None


def flag(value: Any) -> bool | None:
    """``value`` as a bool: ``true``/``false``, or those words as strings (``--config`` passes them so)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def _text(number) -> str:
    return str(number) if isinstance(number, int) else f"{number:g}"


def range_text(minimum=None, maximum=None, exclusive_minimum: bool = False) -> str:
    """`` >= 1``, `` > 0``, `` in [0, 1]``, `` <= 8`` or nothing."""
    if minimum is not None and maximum is not None and not exclusive_minimum:
        return f" in [{_text(minimum)}, {_text(maximum)}]"
    parts = []
    if minimum is not None:
        parts.append(f"{'>' if exclusive_minimum else '>='} {_text(minimum)}")
    if maximum is not None:
        parts.append(f"<= {_text(maximum)}")
    return (" " + " and ".join(parts)) if parts else ""


def _in_range(number, minimum, maximum, exclusive_minimum) -> bool:
    if minimum is not None and (number <= minimum if exclusive_minimum else number < minimum):
        return False
    return maximum is None or number <= maximum


def _bad(key: str, value: Any, form: str) -> ConfigError:
    return ConfigError(f"`{key}` must be {form}; got {value!r}")


def as_int(value: Any, key: str, minimum: int | None = None, maximum: int | None = None) -> int:
    """The numeric rule for an integer setting (a whole number, in range), or a ConfigError naming ``key``."""
    number = whole_number(value)
    if number is None or not _in_range(number, minimum, maximum, False):
        raise _bad(key, value, "an integer" + range_text(minimum, maximum))
    return number


def as_number(value: Any, key: str, minimum: float | None = None, maximum: float | None = None,
              exclusive_minimum: bool = False) -> int | float:
    """The numeric rule for a number setting (finite, in range), or a ConfigError naming ``key``."""
    number = finite_number(value)
    if number is None or not _in_range(number, minimum, maximum, exclusive_minimum):
        raise _bad(key, value, "a finite number" + range_text(minimum, maximum, exclusive_minimum))
    return number


def as_flag(value: Any, key: str) -> bool:
    parsed = flag(value)
    if parsed is None:
        raise _bad(key, value, "true or false")
    return parsed


# ----------------------------------------------------------------------------- declared options


@dataclass(frozen=True)
class Option:
    """One setting a registry entry takes: its default, what it means, and (subclasses) its type and range."""

    default: Any = None
    help: str = ""

    @property
    def form(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def parse(self, value: Any, key: str) -> Any:
        """The typed value, or a ConfigError naming ``key``, the value and :attr:`form`."""
        raise NotImplementedError  # pragma: no cover - abstract


@dataclass(frozen=True)
class Int(Option):
    minimum: int | None = None
    maximum: int | None = None

    @property
    def form(self) -> str:
        return "an integer" + range_text(self.minimum, self.maximum)

    def parse(self, value, key):
        return as_int(value, key, self.minimum, self.maximum)


@dataclass(frozen=True)
class Number(Option):
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False

    @property
    def form(self) -> str:
        return "a finite number" + range_text(self.minimum, self.maximum, self.exclusive_minimum)

    def parse(self, value, key):
        return as_number(value, key, self.minimum, self.maximum, self.exclusive_minimum)


@dataclass(frozen=True)
class Flag(Option):
    @property
    def form(self) -> str:
        return "true or false"

    def parse(self, value, key):
        return as_flag(value, key)


@dataclass(frozen=True)
class Choice(Option):
    choices: tuple = ()

    @property
    def form(self) -> str:
        return "one of " + ", ".join(map(str, self.choices))

    def parse(self, value, key):
        if value not in self.choices:
            raise _bad(key, value, self.form)
        return value


@dataclass(frozen=True)
class Text(Option):
    #: also a non-empty list of strings (e.g. several list files)
    several: bool = False

    @property
    def form(self) -> str:
        return "a string or a non-empty list of strings" if self.several else "a string"

    def parse(self, value, key):
        several = self.several and isinstance(value, list) and value and all(isinstance(v, str) for v in value)
        if not (isinstance(value, str) or several):
            raise _bad(key, value, self.form)
        return value


@dataclass(frozen=True)
class Either(Option):
    """A fixed word (e.g. ``"all"``) or a value of ``option``."""

    word: str = ""
    option: Option = Int()

    @property
    def form(self) -> str:
        return f'"{self.word}" or {self.option.form}'

    def parse(self, value, key):
        if value == self.word:
            return value
        try:
            return self.option.parse(value, key)
        except ConfigError:
            raise _bad(key, value, self.form) from None


class Options(dict):
    """Name -> :class:`Option`: what one registry entry accepts (a loss's ``kd_settings``, a dataset's
    entry keys, a head's and an objective's settings)."""

    def defaults(self) -> dict:
        return {name: option.default for name, option in self.items()}

    def unknown(self, given: Iterable[str], where: str, accepted: Iterable[str] | None = None,
                noun: str = "setting") -> None:
        """Raise the ConfigError of a key ``where`` does not accept, with the closest accepted one."""
        accepted = list(self if accepted is None else accepted)
        for key in given:
            if key not in accepted:
                close = difflib.get_close_matches(key, accepted, n=1)
                hint = f" (did you mean `{close[0]}`?)" if close else ""
                raise ConfigError(f"`{where}` has unknown {noun} `{key}`{hint}; accepted {noun}s: "
                                  f"{', '.join(accepted) or 'none'}")

    def parse(self, values: Mapping, where: str, noun: str = "setting") -> dict:
        """Each of ``values`` typed by its option (keys named ``where.key`` in errors); unknown keys are errors."""
        self.unknown(values, where, noun=noun)
        return {key: self[key].parse(value, f"{where}.{key}") for key, value in values.items()}

    def resolve(self, values: Mapping, where: str) -> dict:
        """The defaults, overridden by ``values`` (checked and typed by :meth:`parse`)."""
        return {**self.defaults(), **self.parse(values, where)}
