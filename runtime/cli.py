"""The `understudy` command line.

Each subcommand lives in a small torch-free module with ``register(subparsers)``; the heavy
imports happen inside the handler, so ``understudy --help`` works on a Jetson image
without torch.

The runtime's own commands are listed below. The offline commands (train, distill, export,
...) are plugins: modules named in the entry point group ``understudy.commands``, which the
``understudy`` distribution fills with ``distill/commands/*``. The runtime never imports
``distill`` by name. Where the group names modules that are not installed (an image built
from the runtime alone), ``--help`` and those command names say in one line how to get
them. Where they are installed but an extra's package (torch, ...) is not, the command ends
in one line naming what to install (exit 2), not a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import logging
import sys
from collections.abc import Iterator
from types import ModuleType

from runtime.errors import UnderstudyError

RUNTIME_COMMANDS = ("compile", "detect", "serve", "stream", "bench", "ros")
PLUGIN_GROUP = "understudy.commands"
# --help order: the workflow, data to deployment; plugin commands not named here go last.
OFFLINE_BEFORE = ("data", "models", "train", "eval", "distill", "export", "quantize")
HELP_ORDER = (*OFFLINE_BEFORE, *RUNTIME_COMMANDS, "auto", "demo")
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


def plugin_commands() -> dict[str, str]:
    """Command name -> module of the ``understudy.commands`` entry points (not imported)."""
    found = importlib.metadata.entry_points(group=PLUGIN_GROUP)
    return {ep.name: ep.value.split(":")[0] for ep in found if ep.name not in RUNTIME_COMMANDS}


def module_installed(module: str) -> bool:
    """Whether ``module`` can be imported here (found, not imported)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # a missing, broken or blocked parent package counts as absent
        return False


def offline_missing_line(names: list[str]) -> str:
    """One line: these offline commands are not installed here, and how to get them."""
    return f"the offline commands ({', '.join(names)}) are not installed here; {OFFLINE_INSTALL}"


def _command_modules(plugins: dict[str, str]) -> Iterator[tuple[str, ModuleType]]:
    """(name, module) of every available command, in --help order."""
    available = {name: f"runtime.commands.{name}" for name in RUNTIME_COMMANDS}
    available.update({n: m for n, m in plugins.items() if module_installed(m)})
    rank = {name: i for i, name in enumerate(HELP_ORDER)}
    for name in sorted(available, key=lambda n: (rank.get(n, len(rank)), n)):
        yield name, importlib.import_module(available[name])


def build_parser() -> argparse.ArgumentParser:
    plugins = plugin_commands()
    missing = [n for n, m in plugins.items() if not module_installed(m)]
    parser = argparse.ArgumentParser(
        prog="understudy",
        description="Distil a detector, export and compile it, serve it with latency budgets.",
        epilog=offline_missing_line(missing) if missing else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,  # the epilog stays one line
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for _, module in _command_modules(plugins):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    plugins = plugin_commands()
    if command in plugins and not module_installed(plugins[command]):
        print(
            f"understudy {command}: error: an offline command, not installed here; "
            f"{OFFLINE_INSTALL}",
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
