"""The search space of a sweep preset, validated, and each sampled point as Hydra overrides of `train`.

Two forms, both keyed by a `train` override name (a config key such as ``optimizer.lr`` or a group such
as ``model``)::

    params:                                   # sampled (tpe, random)
      optimizer.lr: {type: float, low: 1e-4, high: 1e-2, log: true}
      trainer.max_epochs: {type: int, low: 4, high: 12, step: 4}
      model: {type: categorical, choices: [unet, fpn]}
      loss: [ce, ce_dice]                     # a plain list = categorical
    grid:                                     # every combination (grid)
      optimizer.lr: [0.001, 0.003]

Kept free of Optuna imports: the trial object is only duck-typed (``suggest_float`` ...).
"""

from __future__ import annotations

import itertools
import math
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from masklab.errors import UserError
from masklab.overrides import format_override

PARAM_TYPES = ("float", "int", "categorical")
SPEC_KEYS = {
    "float": {"type", "low", "high", "log", "step"},
    "int": {"type", "low", "high", "log", "step"},
    "categorical": {"type", "choices"},
}
Scalar = str | int | float | bool | None


@dataclass(frozen=True)
class Param:
    """One swept `train` override and the values it may take."""

    name: str
    type: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Scalar, ...] = field(default_factory=tuple)
    # Choices that are override text as written (``[192,224]``: a list), not values to quote.
    raw: bool = False

    def override(self, value: Scalar) -> str:
        """The `train` override that sets this parameter to ``value``."""
        return f"{self.name}={value}" if self.raw else format_override(self.name, value)

    def suggest(self, trial: Any) -> Scalar:
        """The trial's value for this parameter (a fixed value when the trial was enqueued, e.g. a grid point)."""
        if self.type == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return trial.suggest_int(self.name, self.low, self.high, log=self.log, step=self.step or 1)
        return trial.suggest_categorical(self.name, list(self.choices))

    def describe(self) -> str:
        if self.type == "categorical":
            return f"{self.name} in {list(self.choices)}"
        scale = ", log" if self.log else (f", step {self.step}" if self.step else "")
        return f"{self.name} {self.type} [{self.low}, {self.high}{scale}]"

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Param:
        return cls(**{**data, "choices": tuple(data.get("choices") or ())})


def _number(value: Any, where: str, integer: bool) -> float | int:
    if isinstance(value, bool) or value is None:
        raise UserError(f"{where}: expected a number, got {value!r}")
    try:
        number = float(value)  # YAML may hand over '1e-4' as a string
    except (TypeError, ValueError):
        raise UserError(f"{where}: expected a number, got {value!r}") from None
    if integer:
        if number != int(number):
            raise UserError(f"{where}: expected an integer, got {value!r}")
        return int(number)
    if not math.isfinite(number):
        raise UserError(f"{where}: expected a finite number, got {value!r}")
    return number


def _scalars(values: Any, where: str) -> tuple[Scalar, ...]:
    if isinstance(values, str | bytes) or not isinstance(values, Sequence) or not values:
        raise UserError(f"{where}: expected a non-empty list of values, got {values!r}")
    for v in values:
        if v is not None and not isinstance(v, str | int | float | bool):
            raise UserError(f"{where}: values must be numbers, strings, booleans or null, got {v!r}")
    if len(set(map(repr, values))) != len(values):
        raise UserError(f"{where}: repeated values in {list(values)}")
    return tuple(values)


def parse_param(name: str, spec: Any, where: str) -> Param:
    """One ``params:`` entry -> Param; every mistake is a UserError naming the entry."""
    where = f"{where}.{name}"
    if not name or not re.fullmatch(r"[+~]?[\w.\-/@]+", name):
        raise UserError(f"{where}: '{name}' is not a train override name (e.g. optimizer.lr or model)")
    if isinstance(spec, Sequence) and not isinstance(spec, str | bytes):
        return Param(name, "categorical", choices=_scalars(spec, where))
    if not isinstance(spec, Mapping):
        raise UserError(f"{where}: expected {{type: float|int|categorical, ...}} or a list of values, got {spec!r}")
    kind = spec.get("type")
    if kind not in PARAM_TYPES:
        raise UserError(f"{where}: unknown type {kind!r}; expected one of {', '.join(PARAM_TYPES)}")
    unknown = sorted(set(spec) - SPEC_KEYS[kind])
    if unknown:
        raise UserError(f"{where}: unknown key(s) {unknown} for type {kind}; expected {sorted(SPEC_KEYS[kind])}")
    if kind == "categorical":
        if "choices" not in spec:
            raise UserError(f"{where}: type categorical needs choices: [...]")
        return Param(name, kind, choices=_scalars(spec["choices"], f"{where}.choices"))
    integer = kind == "int"
    for key in ("low", "high"):
        if key not in spec:
            raise UserError(f"{where}: type {kind} needs low and high")
    low = _number(spec["low"], f"{where}.low", integer)
    high = _number(spec["high"], f"{where}.high", integer)
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise UserError(f"{where}.log: expected true or false, got {log!r}")
    step = None if spec.get("step") is None else _number(spec["step"], f"{where}.step", integer)
    if not low < high:
        raise UserError(f"{where}: low ({low}) must be below high ({high})")
    if log and low <= 0:
        raise UserError(f"{where}: log: true needs low > 0, got {low}")
    if log and step is not None and not (integer and step == 1):
        raise UserError(f"{where}: give either log: true or step, not both")
    if step is not None and step <= 0:
        raise UserError(f"{where}.step: must be positive, got {step}")
    return Param(name, kind, low, high, log, step)


def parse_params(node: Mapping[str, Any] | None, where: str = "sweep.params") -> list[Param]:
    if not isinstance(node, Mapping) or not node:
        raise UserError(f"{where}: expected a mapping of train override -> search space, got {node!r}")
    return [parse_param(str(name), spec, where) for name, spec in node.items()]


def parse_grid(node: Mapping[str, Any] | None, where: str = "sweep.grid") -> list[Param]:
    if not isinstance(node, Mapping) or not node:
        raise UserError(f"{where}: expected a mapping of train override -> list of values, got {node!r}")
    params = []
    for name, values in node.items():
        if isinstance(values, Mapping):
            raise UserError(f"{where}.{name}: a grid takes a list of values, got {dict(values)!r}")
        params.append(parse_param(str(name), list(values) if isinstance(values, Sequence)
                                  and not isinstance(values, str) else values, where))
    return params


def grid_points(params: Sequence[Param]) -> list[dict[str, Scalar]]:
    """Every combination of the grid, in the order of the preset (last parameter varies fastest)."""
    return [dict(zip([p.name for p in params], combo)) for combo in itertools.product(*(p.choices for p in params))]


def parse_overrides(value: Any, where: str = "overrides") -> list[str]:
    """A list of override strings, or one string of space-separated overrides (shell quoting rules)."""
    if value is None:
        return []
    if isinstance(value, str):
        return shlex.split(value)
    if isinstance(value, Sequence):
        for item in value:
            if not isinstance(item, str) or not (item.startswith("~") or "=" in item):
                raise UserError(f"{where}: {item!r} is not a train override (key=value or group=option)")
        return list(value)
    raise UserError(f"{where}: expected a list of train overrides, got {value!r}")


def one_line(message: str) -> str:
    """Hydra's multi-line composition errors in one line (options of a group listed inline)."""
    lines = [ln.strip() for ln in str(message).splitlines() if ln.strip()]
    if not lines:
        return str(message)
    first = lines[0]
    for i, ln in enumerate(lines):
        if ln.startswith("Available options in"):
            options = []
            for opt in lines[i + 1:]:
                if opt.startswith("Config search path") or ":" in opt:
                    break
                options.append(opt)
            if options:
                first += f" (options: {', '.join(options)})"
            break
    return first
