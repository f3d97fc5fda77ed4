"""The loss kinds, each declared once (a `LossKind` in a module of losses/kinds/).

A declaration carries everything the package knows about a loss: its `config.loss` fields and
their defaults, its single-run formula (whose builder also validates the settings), its
coefficients for the shared program formula (or why it cannot share a program), whether it needs
the cosine head, and its report label. The default config, the config's choice lists, the
sweep's run-axis keys and the report labels are derived from this registry, so a new loss is one
new module and nothing else.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import jax
import numpy as np

from fbl_jax.errors import ConfigError

Array = jax.Array
Settings = Mapping[str, Any]
"""A kind's parsed fields, read-only: {field name: value} for the fields it declares."""
Formula = Callable[[Array, Array, Array, Array], tuple[Array, dict[str, Array]]]
"""`formula(logits, features, labels, epoch) -> (loss, aux)`; aux may omit "alpha" (then 0)."""
Builder = Callable[[Settings, np.ndarray, float], Formula]
"""`build(settings, class_counts, num_epochs)`: raises ValueError for impossible settings."""
Coefficients = Callable[[Settings, np.ndarray], dict[str, Any]]
"""`coefficients(settings, class_counts)`: the program formula's arrays that differ from CE's."""

_NAME = re.compile(r"[a-z][a-z0-9_]*")


# ----------------------------------------------------------------------------- fields


@dataclasses.dataclass(frozen=True)
class Field:
    """One `config.loss` field. Its default also fixes how a value is read: a bool default makes
    a flag, a number a float, a string with `choices` one of them. `check` rejects values that
    are impossible whatever the kind (ValueError); limits that involve other settings are the
    kind's `build`'s. Kinds that use the same field reference one declaration
    (losses/fields.py), so it has one default."""

    name: str
    default: bool | int | float | str
    doc: str
    choices: tuple[str, ...] = ()
    check: Callable[[Any], None] | None = None
    show: Callable[[Any], str] | None = None
    """How a report label writes the value ('τ=1.0'); None: labels never show it by this rule."""

    def parse(self, value: Any) -> Any:
        """The config value as the formulas use it; None (or missing) is the default."""
        if value is None:
            value = self.default
        if isinstance(self.default, bool):
            return bool(value)
        if isinstance(self.default, int | float):
            try:
                return float(value)
            except (TypeError, ValueError):
                raise ValueError(
                    f"loss config field {self.name!r} must be a number, got {value!r}"
                ) from None
        if self.choices and value not in self.choices:
            close = difflib.get_close_matches(str(value), self.choices, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"loss config field {self.name}={value!r} is not one of "
                f"{', '.join(self.choices)}{hint}"
            )
        return value

    def value(self, raw: Any) -> Any:
        """`parse`d and `check`ed: what a kind's formula receives."""
        value = self.parse(raw)
        if self.check is not None:
            self.check(value)
        return value


def read_field(config: Any, key: str) -> Any:
    """`key` of a ConfigDict / attribute object / mapping; None when missing."""
    if isinstance(config, Mapping):
        return config.get(key, None)
    return getattr(config, key, None)


# ----------------------------------------------------------------------------- kinds


@dataclasses.dataclass(frozen=True)
class LossKind:
    """Everything about one loss, declared once.

    `coefficients` gives the arrays with which the shared program formula (losses/program.py)
    equals `build`'s formula, so runs of different kinds share one compiled program; a kind
    that cannot be written that way leaves it None and says why in `no_program`. A report
    label is `label`, then `label_parts(values)` if given, then each field with a `show` whose
    value differs from its default (or is named in `label_always`).
    """

    name: str
    label: str
    fields: tuple[Field, ...]
    build: Builder
    coefficients: Coefficients | None = None
    no_program: str = ""
    cosine_head: bool = False
    label_always: tuple[str, ...] = ()
    label_parts: Callable[[Mapping[str, Any]], list[str]] | None = None
    order: int = 100
    """Position in LOSS_NAMES and the config's choice list (ties: registration order)."""

    def settings(self, loss_config: Any) -> Settings:
        """This kind's fields read from a loss config, parsed and checked; missing ones: defaults."""
        return MappingProxyType(
            {f.name: f.value(read_field(loss_config, f.name)) for f in self.fields}
        )


_KINDS: dict[str, LossKind] = {}


def register(kind: LossKind) -> LossKind:
    """Add a kind (at import of its module); the declaration is checked here, once."""
    if not _NAME.fullmatch(kind.name):
        raise ValueError(f"loss name {kind.name!r} must be lower-case letters, digits and _")
    if kind.name in _KINDS:
        raise ValueError(f"loss kind {kind.name!r} is registered twice")
    if not kind.label:
        raise ValueError(f"loss kind {kind.name!r} needs a label for reports")
    if (kind.coefficients is None) == (not kind.no_program):
        raise ValueError(
            f"loss kind {kind.name!r}: give either `coefficients` (its arrays for the shared "
            "program formula) or `no_program` (why it cannot share a program), not both"
        )
    names = [f.name for f in kind.fields]
    if len(set(names)) != len(names) or "name" in names:
        raise ValueError(f"loss kind {kind.name!r} declares fields {names}: repeated or 'name'")
    unknown = set(kind.label_always) - set(names)
    if unknown:
        raise ValueError(f"loss kind {kind.name!r}: label_always names no field {sorted(unknown)}")
    known = {f.name: (k.name, f) for k in _KINDS.values() for f in k.fields}
    for field in kind.fields:
        field.value(field.default)  # a default must be a valid value (e.g. one of the choices)
        other_kind, other = known.get(field.name, (None, field))
        if other != field:
            raise ValueError(
                f"field {field.name!r} of loss kind {kind.name!r} (default {field.default!r}) is "
                f"declared differently by {other_kind!r} (default {other.default!r}): declare it "
                "once (losses/fields.py) and reference it from both"
            )
    _KINDS[kind.name] = kind
    return kind


def unregister(name: str) -> None:
    """Remove a kind (tests register toy kinds and remove them again)."""
    del _KINDS[name]


def kinds() -> tuple[LossKind, ...]:
    return tuple(sorted(_KINDS.values(), key=lambda k: k.order))


def names() -> tuple[str, ...]:
    return tuple(k.name for k in kinds())


def find_kind(name: Any) -> LossKind | None:
    """The kind called `name`, or None (report labels name unknown kinds as they are)."""
    return _KINDS.get(name) if isinstance(name, str) else None


def get_kind(name: Any) -> LossKind:
    """The kind called `name`; an unknown name is a ConfigError naming the choices."""
    kind = find_kind(name)
    if kind is None:
        choices = names()
        close = difflib.get_close_matches(str(name), choices, n=3)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ConfigError(f"unknown loss name {name!r}; valid choices: {', '.join(choices)}{hint}")
    return kind


def fields() -> tuple[Field, ...]:
    """Every registered kind's fields, each once, in kind order."""
    seen: dict[str, Field] = {}
    for kind in kinds():
        for field in kind.fields:
            seen.setdefault(field.name, field)
    return tuple(seen.values())


def defaults() -> dict[str, Any]:
    """{field: default} of every registered field: the default config's `loss` fields."""
    return {f.name: f.default for f in fields()}


def check_fields(loss_config: Any) -> None:
    """Every registered field the config sets, parsed and checked whatever its kind, so a config
    holds no impossible number even in a field its loss does not read."""
    for field in fields():
        value = read_field(loss_config, field.name)
        if value is not None:
            field.value(value)


def field_choices() -> dict[str, tuple[str, ...]]:
    """{field: choices} of the fields that name one of a fixed set."""
    return {f.name: f.choices for f in fields() if f.choices}


def program_fields() -> tuple[str, ...]:
    """Fields of the kinds that share programs: they may differ between a program's runs."""
    seen: dict[str, None] = {}
    for kind in kinds():
        if kind.coefficients is not None:
            seen.update(dict.fromkeys(f.name for f in kind.fields))
    return tuple(seen)


# ----------------------------------------------------------------------------- label text


def fmt_decimal(x: Any) -> str:
    """τ, γ: at least one decimal ('1.0', '0.8', '0.25'); other text unchanged."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    return f"{v:.1f}" if round(v, 1) == v else f"{v:g}"


def fmt_short(x: Any) -> str:
    """A, β, epochs: the shortest form ('60', '2.5')."""
    try:
        return f"{float(x):g}"
    except (TypeError, ValueError):
        return str(x)


def differs(value: Any, default: Any) -> bool:
    """As numbers where both are numbers (60 == 60.0), else as text."""
    try:
        return float(value) != float(default)
    except (TypeError, ValueError):
        return str(value) != str(default)
