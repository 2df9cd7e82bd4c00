"""``testbed devices list|show NAME|predict``: device profiles fitted on measured latency (docs/devices.md)."""

from __future__ import annotations

import json


def register(subparsers) -> None:
    parser = subparsers.add_parser("devices", help="device/server profiles fitted on measured latency")
    sub = parser.add_subparsers(dest="devices_command", metavar="ACTION")
    parser.set_defaults(func=lambda args: parser.print_help() or 2)

    lst = sub.add_parser("list", help="profile names, labels and held-back fit error")
    lst.set_defaults(func=cmd_list)

    show = sub.add_parser("show", help="one profile: label, source, fit, energy (with sources), spread")
    show.add_argument("name")
    show.set_defaults(func=cmd_show)

    predict = sub.add_parser("predict", help="predicted per-split times of a registry model on profiles")
    predict.add_argument("--model", default="resnet20-ee", help="registry name (see `testbed models list`)")
    predict.add_argument("--input", default="1x28x28", help="CxHxW (default 1x28x28)")
    predict.add_argument("--profiles", default="raspberry_pi4,pixel3,jetson_nano,gtx1080ti",
                         help="comma-separated profile names (default: four)")
    predict.add_argument("--splits", action="store_true", help="print head/tail ms at every split point")
    predict.set_defaults(func=cmd_predict)


def cmd_list(args) -> int:
    from testbed.devices import get_profile, list_profiles

    print(f"{'profile':20s} {'kind':6s} {'held-back MAPE':>14s} {'Spearman':>8s}  label")
    for name, label in list_profiles().items():
        profile = get_profile(name)
        held = profile.validation["held_back"]
        print(f"{name:20s} {profile.kind:6s} {held['mape_pct']:13.2f}% {held['spearman']:8.3f}  {label}")
    return 0


def cmd_show(args) -> int:
    from testbed.devices import get_profile

    p = get_profile(args.name)
    print(json.dumps({"name": p.name, "label": p.label, "kind": p.kind, "status": p.status, "source": p.source,
                      "graph": p.graph, "validation": p.validation, "overhead_ms": p.overhead_ms,
                      "energy": p.energy, "spread": p.spread}, indent=1))
    return 0


def _shape(text: str) -> tuple[int, int, int]:
    from testbed.errors import ConfigError

    try:
        channels, height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError("--input", f"expected CxHxW such as 1x28x28 or 3x32x32, got {text!r}") from None
    if height != width:
        raise ConfigError("--input", f"square inputs only (the models take one input_size), got {text!r}")
    return channels, height, width


def cmd_predict(args) -> int:
    import torch

    from testbed.devices import get_profile
    from testbed.models.registry import build_model

    torch.set_num_threads(1)
    shape = _shape(args.input)
    model = build_model(args.model, in_channels=shape[0], input_size=shape[1])
    profiles = [get_profile(name.strip()) for name in args.profiles.split(",") if name.strip()]
    costs = {p.name: p.model_costs(model, shape) for p in profiles}
    print(f"{args.model} at {args.input}, batch 1: predicted ms")
    print(f"{'':14s}" + "".join(f"{p.name:>20s}" for p in profiles))
    print(f"{'full':14s}" + "".join(f"{costs[p.name]['full_ms']:20.2f}" for p in profiles))
    if args.splits and costs[profiles[0].name]["head_ms"]:
        for split in model.split_points:
            print(f"{split:14s}" + "".join(
                f"{costs[p.name]['head_ms'][split]:9.2f} +{costs[p.name]['tail_ms'][split]:9.2f}" for p in profiles))
        print("(head ms on the device + tail ms if the rest ran on the same hardware)")
    return 0
