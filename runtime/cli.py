"""The `understudy` command line.

Each subcommand lives in a small torch-free module (``runtime/commands/*`` and
``distill/commands/*``) with ``register(subparsers)``; the heavy imports happen inside the
handler, so ``understudy --help`` works on a Jetson image without torch.

The offline commands (``distill/commands/*``) are listed only where the ``distill``
package is installed; where it is not, ``--help`` and the command names say in one line how
to get them. The runtime reaches ``distill`` through the module names below and nothing
else. Where ``distill`` is installed but an extra's package (torch, ...) is not, the
command ends in one line naming what to install (exit 2), not a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys

from runtime.errors import UnderstudyError

# Subcommand modules, in the order they appear in --help; the command is the last part.
COMMAND_MODULES = (
    "distill.commands.data",
    "distill.commands.models",
    "distill.commands.train",
    "distill.commands.eval",
    "distill.commands.distill",
    "distill.commands.export",
    "distill.commands.quantize",
    "runtime.commands.compile",
    "runtime.commands.detect",
    "runtime.commands.serve",
    "runtime.commands.stream",
    "runtime.commands.bench",
    "distill.commands.auto",
    "distill.commands.demo",
)
OFFLINE_PACKAGE = "distill"
OFFLINE_INSTALL = "pip install 'understudy[train]'"
# Import name -> (pip package, extra) of the extras' packages: a handler that finds one
# missing ends in one line naming it and the extra to install.
EXTRA_PACKAGES = {
    "torch": ("torch", "train"),
    "matplotlib": ("matplotlib", "train"),
    "PIL": ("pillow", "train"),
    "pycocotools": ("pycocotools", "eval"),
    "pycuda": ("pycuda", "tensorrt"),
}


def offline_commands() -> tuple[str, ...]:
    """Names of the offline commands (those of the ``distill`` package), in --help order."""
    return tuple(
        m.rsplit(".", 1)[-1] for m in COMMAND_MODULES if m.startswith(OFFLINE_PACKAGE + ".")
    )


def offline_installed() -> bool:
    """Whether the ``distill`` package can be imported here (found, not imported)."""
    try:
        return importlib.util.find_spec(OFFLINE_PACKAGE) is not None
    except ImportError:  # a broken or blocked package counts as absent
        return False


def offline_missing_line() -> str:
    """One line: the offline commands are not installed here, and how to get them."""
    return (
        f"the offline commands ({', '.join(offline_commands())}) are not installed here "
        f"(no {OFFLINE_PACKAGE} package); {OFFLINE_INSTALL}"
    )


def build_parser() -> argparse.ArgumentParser:
    with_offline = offline_installed()
    parser = argparse.ArgumentParser(
        prog="understudy",
        description="Distil a detector, export and compile it, serve it with latency budgets.",
        epilog=None if with_offline else offline_missing_line(),
        formatter_class=argparse.RawDescriptionHelpFormatter,  # the epilog stays one line
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        if with_offline or not name.startswith(OFFLINE_PACKAGE + "."):
            importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    if command in offline_commands() and not offline_installed():
        print(
            f"understudy {command}: error: an offline command, not installed here "
            f"(no {OFFLINE_PACKAGE} package); {OFFLINE_INSTALL}",
            file=sys.stderr,
        )
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv  # for reports: the command line
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except UnderstudyError as e:
        print(f"understudy {args.command}: error: {e}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:
        line = missing_extra_line(e)
        if line is None:
            raise
        print(f"understudy {args.command}: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"understudy {args.command}: interrupted", file=sys.stderr)
        return 130


def missing_extra_line(error: ModuleNotFoundError) -> str | None:
    """ "needs torch, not installed here; pip install 'understudy[train]'" when ``error`` is
    about an extra's package (see ``EXTRA_PACKAGES``); None for any other module."""
    top = (error.name or "").split(".", 1)[0]
    if top not in EXTRA_PACKAGES:
        return None
    package, extra = EXTRA_PACKAGES[top]
    return f"needs {package}, not installed here; pip install 'understudy[{extra}]'"


if __name__ == "__main__":
    sys.exit(main())
