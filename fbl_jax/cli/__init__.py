"""What every absl entry point shares: --help that helps, one-line errors, exit codes.

A researcher's typo (`--config.loss.nmae=ce`, a missing data root) must end in one line naming
the field and the fix, exit status 2, and no work directory left behind; not a traceback.
"""

from __future__ import annotations

import difflib
import pathlib
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from absl import app, flags

USAGE_EXIT_CODE = 2  # as argparse: the command line or the config is wrong
FAILURE_EXIT_CODE = 1
HELP_ARGS = ("-h", "--help", "-help", "--helpshort", "-?")
CONFIGS_DIR = pathlib.Path(__file__).resolve().parents[2] / "configs"


class UserError(Exception):
    """Bad input the user can fix: printed as one line, exit status 2."""


def error_line(prog: str, message: str) -> str:
    # ml_collections and KeyError messages carry quotes and escaped newlines; one clean line
    text = " ".join(str(message).replace("\\n", "\n").split())
    return f"{prog}: error: {text}"


def fail(prog: str, message: str, code: int = USAGE_EXIT_CODE) -> NoReturn:
    print(error_line(prog, message), file=sys.stderr)
    sys.exit(code)


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input, not a bug: the config, paths, a foreign checkpoint."""
    from fbl_jax.defaults import ConfigError
    from fbl_jax.errors import DataError
    from fbl_jax.train.checkpoints import CheckpointMismatchError

    return (
        UserError, ConfigError, DataError, FileNotFoundError, FileExistsError,
        CheckpointMismatchError,
    )  # fmt: skip


def help_text(
    prog: str,
    doc: str,
    flag_names: Sequence[str],
    config_flag: str | None = "config",
    default_config_file: str | None = None,
    example: str = "loss.name=ce --config.data.root=$HOME/data/cifar10",
) -> str:
    lines = [doc.strip(), "", "Flags:"]
    for name in flag_names:
        flag = flags.FLAGS[name]
        default = flag.default
        if name == config_flag:  # the parsed default is a whole config: name its file
            default = default_config_file
        default = "" if default in (None, "") else f" (default: {default})"
        lines.append(f"  --{name}: {flag.help}{default}")
    if config_flag:
        lines += [
            "",
            f"Override any config field with --{config_flag}.FIELD=VALUE, e.g. "
            f"--{config_flag}.{example}. An unknown field is an error; tuples are written "
            "like --config.optimizer.decay_epochs='(160,180)'.",
        ]
        if config_names():
            lines.append(f"Configs ({CONFIGS_DIR}): " + ", ".join(config_names()))
    lines.append("All absl flags: --helpfull.")
    return "\n".join(lines)


def config_names() -> list[str]:
    """The config files in configs/ (NAME.py)."""
    if not CONFIGS_DIR.is_dir():
        return []
    return sorted(p.name for p in CONFIGS_DIR.glob("*.py") if not p.name.startswith("_"))


def config_file_arg(argv: Sequence[str], flag: str, default_file: str | None):
    """(the config file `argv` names, as given, or `default_file`; absl's `:ARG` or None)."""
    path = default_file
    args = list(argv[1:])
    for i, arg in enumerate(args):
        if arg.startswith(f"--{flag}="):
            path = arg[len(f"--{flag}=") :]
        elif arg == f"--{flag}" and i + 1 < len(args):  # absl also takes `--config FILE`
            path = args[i + 1]
    config_arg = None
    if path and not pathlib.Path(path).is_file() and ":" in path:  # absl's FILE.py:ARG form
        path, config_arg = path.split(":", 1)
    return path, config_arg


def check_config_file(prog: str, argv: Sequence[str], flag: str, default_file: str | None):
    """A --config file that does not exist: one line naming it and the configs there are (absl
    would only fail when the program first reads the config, with a long traceback)."""
    path, _ = config_file_arg(argv, flag, default_file)
    if not path or pathlib.Path(path).is_file():
        return
    names = config_names()
    try:
        where = CONFIGS_DIR.relative_to(pathlib.Path.cwd())
    except ValueError:
        where = CONFIGS_DIR
    close = difflib.get_close_matches(pathlib.Path(path).name, names, n=1)
    hint = f"did you mean {where / close[0]}? " if close else ""
    fail(
        prog,
        f"--{flag}={path}: no such config file (from {pathlib.Path.cwd()}); {hint}"
        f"configs in {where}/: {', '.join(names) or 'none'}",
    )


def check_config_overrides(prog: str, argv: Sequence[str], flag: str, default_file: str | None):
    """Name an unknown `--config.a.b=` field (with close matches) before absl parses anything."""
    from fbl_jax.defaults import config_from_file

    overrides = [a for a in argv[1:] if a.startswith(f"--{flag}.")]
    if not overrides:
        return
    path, config_arg = config_file_arg(argv, flag, default_file)
    if path is None:
        fail(prog, f"--{flag}=FILE is required before --{flag}.FIELD overrides")
    try:
        config = config_from_file(path, config_arg)
    except FileNotFoundError as err:
        fail(prog, f"{err}; pass --{flag}=configs/NAME.py (see --help)")
    for arg in overrides:
        field = arg[len(f"--{flag}.") :].split("=", 1)[0]
        node: Any = config
        walked = []
        for part in field.split("."):
            keys = list(node.keys()) if hasattr(node, "keys") else []
            if part not in keys:
                where = ".".join(walked) or "the config"
                close = difflib.get_close_matches(part, keys, n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                fail(
                    prog,
                    f"unknown config field {field!r} in {arg!r}: {where} has no {part!r}{hint} "
                    f"(fields of {where}: {', '.join(sorted(keys))})",
                )
            node = node[part]
            walked.append(part)


def start(argv: Sequence[str], distributed_config: Any) -> None:
    """What every entry point does before its work (its logging is run_absl's): reject stray
    arguments, fast CPU flags, join hosts (jax.distributed)."""
    from fbl_jax.cli import cpu_flags
    from fbl_jax.train import distributed

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {list(argv[1:])}")
    cpu_flags.apply_fast_cpu_flags()
    distributed.maybe_initialize(distributed_config)


def run_absl(
    prog: str,
    main: Callable[[list[str]], Any],
    doc: str,
    define_flags: Callable[[], Sequence[str]],
    config_flag: str | None = "config",
    default_config_file: str | None = None,
    example: str = "loss.name=ce --config.data.root=$HOME/data/cifar10",
) -> None:
    """app.run with --help (exit 0), flag errors and user errors as one line (exit 2).

    `define_flags` defines the program's flags and returns their names. It runs after the
    config overrides are checked: ml_collections applies `--config.x=` while defining a config
    flag that has a default file, and would raise there, outside any handler.
    """
    from fbl_jax import hugepages

    hugepages.reexec()  # before any work: the command starts again once with the setting
    argv = list(sys.argv)
    if config_flag and not any(a in HELP_ARGS for a in argv[1:]):
        check_config_file(prog, argv, config_flag, default_config_file)
    if config_flag:
        check_config_overrides(prog, argv, config_flag, default_config_file)
    flag_names = define_flags()
    if any(a in HELP_ARGS for a in argv[1:]):
        print(help_text(prog, doc, flag_names, config_flag, default_config_file, example))
        sys.exit(0)

    def parse(args: list[str]) -> list[str]:
        try:
            return flags.FLAGS(args)
        except flags.Error as err:
            fail(prog, f"{err} (see {prog} --help)")
        except (AttributeError, KeyError, TypeError, ValueError) as err:
            fail(prog, f"{err} (see {prog} --help)")

    def guarded(args: list[str]) -> Any:
        from fbl_jax.cli import xla_cache
        from fbl_jax.cli.logs import setup_logging
        from fbl_jax.train.preemption import stop_scope

        setup_logging()  # after app.run installed absl's handler, which this replaces
        xla_cache.enable()
        try:
            with stop_scope():  # SIGTERM from here on: a clean stop at the next safe point
                return main(args)
        except user_errors() as err:
            fail(prog, str(err))
        except FloatingPointError as err:  # NonFiniteError: the run stopped itself, with reason
            fail(prog, str(err), FAILURE_EXIT_CODE)
        except app.UsageError as err:
            fail(prog, f"{err} (see {prog} --help)")

    app.run(guarded, argv=argv, flags_parser=parse)
