"""A sweep plan's values: each one typed as its TrainConfig field, ranges for Optuna, names checked.

`lr: [1e-4]` in YAML (which reads it as text) and `-P lr=1e-4` become the same float, so they
make the same sweep key and a resumed sweep skips what it trained; a value of the wrong type, a
parameter that is not one, or one the sweep sets itself is one line naming it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from train.config import ConfigError, fields

CONFIG_FIELDS = {spec.name: spec for spec in fields()}
# Set by the sweep itself, never by a plan.
RESERVED = {"init_model", "resume", "run_name", "experiment", "register_as"}
TYPE_WORDS = {"float": "a number", "int": "a whole number", "bool": "true or false", "str": "text (quote it)"}


@dataclass(frozen=True)
class Range:
    """An open range Optuna samples from: `low..high` or `low..high:log`."""

    low: float
    high: float
    log: bool = False
    integer: bool = False

    def __str__(self) -> str:
        return f"{self.low:g}..{self.high:g}{':log' if self.log else ''}"


def check_quotable(text: str, what: str) -> str:
    """Names go into MLflow filter strings; a name holding both quote characters cannot."""
    if "'" in text and '"' in text:
        raise ConfigError(f"{what} '{text}' holds both ' and \"; use at most one kind of quote")
    return text


def check_values(values, where: str) -> dict:
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must be a mapping of parameter: value")
    for key in values:
        if key not in CONFIG_FIELDS:
            raise ConfigError(f"{where}: '{key}' is not a training parameter (see `python -m train --help`)")
        if key in RESERVED:
            raise ConfigError(f"{where}: '{key}' is set by the sweep itself; remove it from the plan")
    return dict(values)


def typed_values(values, where: str) -> dict:
    return {key: typed(key, value, where) for key, value in check_values(values, where).items()}


def typed(name: str, value, where: str):
    """A plan's value in the type of its TrainConfig field; one line naming it otherwise."""
    kind = CONFIG_FIELDS[name].type
    if isinstance(value, str):
        return convert(name, value)
    if isinstance(value, bool):
        ok = kind == "bool"
    elif isinstance(value, int):
        ok = kind in ("int", "float")
    else:
        ok = isinstance(value, float) and kind == "float"
    if not ok:
        raise ConfigError(f"{where}: {name} must be {TYPE_WORDS.get(kind, kind)} (got {value!r})")
    return float(value) if kind == "float" else value


def as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def parse_range(text: str, name: str) -> Range:
    """`1e-7..1e-2:log` -> Range(1e-7, 1e-2, log=True)."""
    spec, _, scale = text.partition(":")
    low, sep, high = spec.partition("..")
    try:
        if not sep or scale not in ("", "log"):
            raise ValueError
        bounds = float(low), float(high)
    except ValueError:
        raise ConfigError(f"{name}={text} is not a range; write LOW..HIGH or LOW..HIGH:log, e.g. 1e-7..1e-2:log") from None
    if not (math.isfinite(bounds[0]) and math.isfinite(bounds[1]) and bounds[0] < bounds[1]) or (scale == "log" and bounds[0] <= 0):
        raise ConfigError(f"{name}={text}: need LOW < HIGH (and LOW > 0 for :log)")
    integer = CONFIG_FIELDS[name].type == "int"
    return Range(bounds[0], bounds[1], scale == "log", integer)


def convert(name: str, text) -> object:
    """A command-line value in the type of the TrainConfig field."""
    kind = CONFIG_FIELDS[name].type
    if not isinstance(text, str):
        return text
    try:
        if kind == "float":
            return float(text)
        if kind == "int":
            return int(text)
        if kind == "bool":
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return text.lower() in ("true", "1", "yes")
    except ValueError:
        raise ConfigError(f"{name}={text} is not a {kind}") from None
    return text
