"""``testbed serve`` and ``testbed keys``. Light module: zmq/numpy load inside the handlers."""

from __future__ import annotations

import argparse

from testbed.errors import ConfigError

# Tested to import (tests/test_transport_hardening.py): every example in the help text must run.
EXAMPLE_OP = "stats=testbed.transport.handlers:tensor_stats"


def register(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser("serve", help="run the cloud-side tensor server (docs/protocol.md)",
                                  description=run_serve.__doc__)
    add_serve_arguments(serve)
    serve.set_defaults(func=run_serve)

    keys = subparsers.add_parser("keys", help="generate CURVE keypairs for `serve --curve`",
                                 description=run_keys.__doc__)
    keys.add_argument("directory", help="key directory to create or extend")
    keys.add_argument("--client", action="append", default=None, metavar="NAME",
                      help="client keypair to create and authorize (repeatable; default: client)")
    keys.set_defaults(func=run_keys)


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint", default="tcp://*:5555", help="ZeroMQ bind endpoint (default %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="model worker threads (default %(default)s)")
    parser.add_argument("--max-queue", type=int, default=16,
                        help="jobs waiting for a worker before requests get `busy` (default %(default)s)")
    parser.add_argument("--heartbeat-ivl", type=float, default=0.5, help="seconds (default %(default)s)")
    parser.add_argument("--heartbeat-timeout", type=float, default=3.0, help="seconds (default %(default)s)")
    parser.add_argument("--curve", metavar="KEY_DIR", help="require CURVE with keys from `testbed keys KEY_DIR`")
    parser.add_argument("--op", action="append", default=[], metavar="NAME=MODULE:CALLABLE",
                        help=f"extra handler, e.g. {EXAMPLE_OP} (repeatable)")
    parser.add_argument("--chunk-kib", type=int, default=256,
                        help="reply frame size in KiB; also the largest request frame accepted when bigger than "
                             "256 (default %(default)s; keep one chunk under heartbeat-timeout/4 at the slowest rate)")
    parser.add_argument("--inline", action="append", default=None, metavar="OP",
                        help="run OP in the I/O thread instead of the worker pool (repeatable; "
                             "default: echo, discard); --inline none runs every op in the pool")
    parser.add_argument("--local-clock", action="store_true",
                        help="clients run on another machine: deadlines count from reception (budget_ns)")
    parser.add_argument("--no-warm-up", dest="warm_up", action="store_false",
                        help="do not import the codec libraries (torch for bfloat16, lz4, zstd) before serving: "
                             "faster start, but the first request that needs one waits for the import")


def _load_handlers(specs: list[str]) -> dict:
    import importlib

    from testbed.transport.server import BUILTIN_HANDLERS

    handlers = dict(BUILTIN_HANDLERS)
    for spec in specs:
        name, _, target = spec.partition("=")
        module_name, _, attr = target.partition(":")
        if not name or not module_name or not attr:
            raise ConfigError("--op", f"{spec!r} is not NAME=MODULE:CALLABLE")
        try:
            handlers[name] = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError("--op", f"cannot load {target!r}: {exc}") from None
    return handlers


def run_serve(args: argparse.Namespace) -> int:
    """Serve tensor requests over ZeroMQ until SIGTERM/SIGINT (built-in ops: echo, sleep, discard)."""
    import signal

    from testbed.transport.server import Server

    server = Server(args.endpoint, handlers=_load_handlers(args.op), workers=args.workers,
                    max_queue=args.max_queue, heartbeat_ivl=args.heartbeat_ivl,
                    heartbeat_timeout=args.heartbeat_timeout, curve_dir=args.curve,
                    shared_clock=not args.local_clock, chunk=args.chunk_kib * 1024,
                    inline_ops=None if args.inline is None else [op for op in args.inline if op != "none"],
                    warm_up=args.warm_up)

    def stop(signum: int, _frame: object) -> None:
        server.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever()
    except FileNotFoundError as exc:
        raise ConfigError(args.curve or "--curve", str(exc)) from None
    return 0


def run_keys(args: argparse.Namespace) -> int:
    """Create a CURVE key directory: server keypair, client keypairs, authorized_clients/."""
    from testbed.transport.keys import generate_keys

    directory = generate_keys(args.directory, tuple(args.client or ["client"]))
    print(f"keys in {directory}: server gets server.key_secret + authorized_clients/, "
          f"each client gets server.key + <name>.key_secret")
    return 0
