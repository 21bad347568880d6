"""The `understudy` command line.

Each subcommand lives in a small torch-free module (``runtime/commands/*`` and
``distill/commands/*``) with ``register(subparsers)``; the heavy imports happen inside the
handler, so ``understudy --help`` works on a Jetson image without torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from runtime.errors import UnderstudyError

# Subcommand modules, in the order they appear in --help.
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="understudy",
        description="Distil a detector, export and compile it, serve it with latency budgets.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for reports: the command line
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except UnderstudyError as e:
        print(f"understudy {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"understudy {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
