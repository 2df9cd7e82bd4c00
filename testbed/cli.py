"""``testbed`` command line: thin sub-commands over the package's modules.

Each sub-command lives in a light module exposing ``register(subparsers)``;
heavy imports (torch, mininet) happen inside the handlers, so ``testbed --help``
stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from testbed.errors import TestbedError

# Modules that register sub-commands, in help order.
COMMAND_MODULES = [
    "testbed.emulation.cli",  # doctor, cleanup, replay-demo
    "testbed.traces.cli",  # traces import|show|stats|plot
    "testbed.transport.cli",  # serve, keys
    "testbed.models.cli",  # models train|profile|card
    "testbed.devices.cli",  # devices list|show|predict
    "testbed.experiment_cli",  # run, report, reproduce, quickstart
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="testbed",
        description="Network-emulation testbed for device/cloud collaborative DNN inference.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show debug logging and tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
                continue  # that part of the testbed is not built yet
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    import logging

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname).1s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args.func(args) or 0)
    except TestbedError as exc:
        if args.verbose:
            raise
        print(f"testbed: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("testbed: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
