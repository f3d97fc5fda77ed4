"""What a sweep trains: the cartesian product of `--set KEY=V1,V2,...`, grouped into programs.

Runs that differ only in `RUN_AXIS_KEYS` (the seed, numeric loss hyper-parameters, the α(t)
schedule, the loss kind within one formula) train together in one compiled program with a
leading run axis; any other difference (model, head, data, batch size, epochs, optimizer)
starts another program. Every run gets an ordinary run directory named from its settings.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import difflib
import itertools
import json
import pathlib
import re
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections

from fbl_jax import defaults, losses
from fbl_jax.defaults import ConfigError

# Config fields that may differ between the runs of one program: the seed, and the loss kind and
# the fields of the kinds that share programs (losses.program_coefficients turns them into each
# run's λ, α(t) schedule, logit offsets, margins, class weights and focal γ).
RUN_AXIS_KEYS = (
    "seed",
    "run_name",
    "loss.name",
    *(f"loss.{field}" for field in losses.program_fields()),
)
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._=,+-]")


@dataclasses.dataclass
class SweepRun:
    name: str  # its directory under the sweep's workdir
    settings: dict[str, Any]  # the --set values of this combination
    config: ml_collections.ConfigDict


@dataclasses.dataclass
class Program:
    """Runs compiled and trained together (same shapes and shared settings)."""

    index: int
    runs: list[SweepRun]
    key: str  # what the runs share, as JSON (for messages and the sweep record)


def parse_set(text: str) -> tuple[str, list[Any]]:
    """`KEY=V1,V2,...` → (KEY, [values]); values are Python literals where they parse as one."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r} must look like KEY=V1,V2,... (e.g. seed=0,1,2)")
    key, _, values = text.partition("=")
    key = key.strip()
    if key.startswith("config."):
        key = key[len("config.") :]
    parts = _split_values(values)
    if not key or not parts or any(p == "" for p in parts):
        raise ConfigError(f"--set {text!r}: give a key and at least one value, e.g. seed=0,1,2")
    return key, [_literal(p) for p in parts]


def _split_values(values: str) -> list[str]:
    """Split on commas outside brackets, so tuples like (160,180) stay one value."""
    parts, depth, current = [], 0, ""
    for ch in values:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += ch
    parts.append(current.strip())
    return parts


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare word such as ce or authors_code


def set_field(config: ml_collections.ConfigDict, key: str, value: Any) -> None:
    """config[key] = value for a dotted key, with the field's type; unknown keys are errors."""
    node = config
    *parents, leaf = key.split(".")
    for i, part in enumerate(parents):
        if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
            _unknown(key, ".".join(parents[:i]), part, node)
        node = node[part]
    if leaf not in node:
        _unknown(key, ".".join(parents), leaf, node)
    current = node[leaf]
    if isinstance(value, bool) and current is not None and not isinstance(current, bool):
        # ml_collections would store True as 1.0 in a float field
        raise ConfigError(
            f"--set {key}={value}: {key} takes a {type(current).__name__}, not a bool"
        )
    if isinstance(current, bool) and isinstance(value, str):
        value = {"true": True, "false": False}.get(value.lower(), value)
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(current, tuple) and isinstance(value, list):
        value = tuple(value)
    try:
        node[leaf] = value
    except (TypeError, ValueError) as err:
        raise ConfigError(f"--set {key}={value!r}: {err}") from None


def _unknown(key: str, where: str, part: str, node: Any) -> None:
    keys = list(node.keys()) if hasattr(node, "keys") else []
    close = difflib.get_close_matches(part, keys, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(
        f"unknown config field {key!r}: {where or 'the config'} has no {part!r}{hint}"
    )


def run_name(settings: dict[str, Any]) -> str:
    """`loss.name=ce,seed=1`: the settings in the order given, safe as one path component."""
    if not settings:
        return "run"
    text = ",".join(f"{k}={_fmt(v)}" for k, v in settings.items())
    return _SAFE_NAME.sub("_", text)


def _fmt(value: Any) -> str:
    if isinstance(value, tuple | list):
        return "(" + "+".join(_fmt(v) for v in value) + ")"
    return str(value)


def expand(
    base: ml_collections.ConfigDict, sets: Sequence[tuple[str, list[Any]]]
) -> list[SweepRun]:
    """Every combination of the `--set` values applied to a copy of `base`, validated."""
    keys = [k for k, _ in sets]
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise ConfigError(f"--set names {dupes} more than once; give all values in one --set")
    runs = []
    for combo in itertools.product(*[values for _, values in sets]):
        settings = dict(zip(keys, combo))
        config = copy.deepcopy(base)
        for key, value in settings.items():
            set_field(config, key, value)
        defaults.validate_config(config)
        runs.append(SweepRun(run_name(settings), settings, config))
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise ConfigError("two --set combinations give the same run name; give distinct values")
    return runs


def program_key(config: ml_collections.ConfigDict) -> str:
    """What a run must share with the others of its program: everything but RUN_AXIS_KEYS."""
    flat = _flatten(config.to_dict())
    for key in RUN_AXIS_KEYS:
        flat.pop(key, None)
    return json.dumps(flat, sort_keys=True, default=list)


def group_programs(runs: Sequence[SweepRun]) -> list[Program]:
    groups: dict[str, list[SweepRun]] = {}
    for run in runs:
        groups.setdefault(program_key(run.config), []).append(run)
    return [Program(i, members, key) for i, (key, members) in enumerate(groups.items())]


def differences(programs: Sequence[Program]) -> list[str]:
    """For the user: the fields in which the programs differ (why they could not be one)."""
    if len(programs) < 2:
        return []
    flats = [json.loads(p.key) for p in programs]
    keys = sorted(set().union(*flats))
    return [k for k in keys if len({json.dumps(f.get(k), default=list) for f in flats}) > 1]


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def claim_workdir(workdir: pathlib.Path, spec: dict[str, Any], extend: bool = False) -> None:
    """The workdir names the sweep: a restart resumes it, another sweep there is an error.

    `extend` (fbl-reproduce, whose stages grow by methods or seeds between calls): runs may be
    added to or left out of the saved sweep; sweep.json then lists every run ever claimed."""
    path = workdir / "sweep.json"
    text = json.dumps(spec, indent=1, default=list)
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("runs") == json.loads(text)["runs"]:
            return
        if not extend:
            raise ConfigError(
                f"{workdir} holds another sweep (its sweep.json lists other runs); use a new "
                "--workdir, or the same --set values to resume it"
            )
        known = {r["name"] for r in saved.get("runs", [])}
        added = [r for r in json.loads(text)["runs"] if r["name"] not in known]
        if not added:
            return
        spec = {**saved, "runs": [*saved.get("runs", []), *added]}
        text = json.dumps(spec, indent=1, default=list)
    workdir.mkdir(parents=True, exist_ok=True)
    if jax.process_index() == 0:
        path.write_text(text + "\n")
