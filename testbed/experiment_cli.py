"""``testbed quickstart`` (and, later, run / report / reproduce)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quickstart", help="the README's first command: a replay demo of a real LTE trace")
    p.add_argument("--out", default="results/quickstart")
    p.set_defaults(func=quickstart)


def quickstart(args) -> int:
    from testbed.emulation.cli import replay_demo

    ns = argparse.Namespace(trace="traces/att-lte-driving.csv", topology="topologies/device-cloud.yaml",
                            direction="down", duration=60.0, outage="20:25", granularity=0.1, out=args.out)
    return replay_demo(ns)
