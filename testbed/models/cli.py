"""``testbed models list|train|profile|card|family`` -- thin wrappers; torch is imported in handlers."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from testbed.errors import ConfigError


def register(subparsers) -> None:
    parser = subparsers.add_parser("models", help="train, profile and inspect split-able early-exit models")
    sub = parser.add_subparsers(dest="models_command", metavar="ACTION")

    listing = sub.add_parser("list", help="registered model names")
    listing.set_defaults(func=cmd_list)

    train = sub.add_parser("train", help="train all exits jointly, write checkpoint + model card")
    _add_model_args(train)
    train.add_argument("--out", type=Path, help="output directory (default: the load_or_train cache entry)")
    train.set_defaults(func=cmd_train)

    profile = sub.add_parser("profile", help="per-split head/tail latency under a CPU share, stored in the card")
    _add_model_args(profile)
    profile.add_argument("--checkpoint", type=Path, help="checkpoint directory (default: cached/trained --model)")
    profile.add_argument("--role", choices=["device", "cloud", "gpu"], default="device")
    profile.add_argument("--cpu-share", type=float, help="CPUs' worth of time, e.g. 0.5 = half a core")
    profile.add_argument("--cpu-limit", choices=["cgroup", "external", "none"], default="cgroup",
                         help="cgroup: limit this process via cgroup-v1 cpu (root); external: already limited")
    profile.add_argument("--repeats", type=int, default=20)
    profile.add_argument("--profile-threads", type=int, default=1, help="torch threads while timing")
    profile.set_defaults(func=cmd_profile)

    card = sub.add_parser("card", help="print a model card as tables")
    card.add_argument("path", nargs="?", type=Path, help="checkpoint directory or card.json")
    _add_model_args(card)
    card.add_argument("--json", action="store_true", help="print the raw JSON")
    card.set_defaults(func=cmd_card)

    family = sub.add_parser("family", help="measure the device-aware family, fit a latency predictor")
    family.add_argument("--cpu-shares", default="1,0.5", help="comma-separated CPU shares besides unlimited")
    family.add_argument("--cpu-limit", choices=["cgroup", "none"], default="cgroup")
    family.add_argument("--size", type=int, default=16)
    family.add_argument("--channels", type=int, default=1)
    family.set_defaults(func=cmd_family)


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="resnet20-ee", help="registry name (see `testbed models list`)")
    parser.add_argument("--data", default="digits", help="digits, cifar10, cifar100, imagefolder, idx")
    parser.add_argument("--data-root", help="directory of a user-provided dataset")
    parser.add_argument("--size", type=int, default=16, help="input resolution (pixels)")
    parser.add_argument("--channels", type=int, default=1, choices=[1, 3])
    parser.add_argument("--limit", type=int, help="cap on training images")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch threads for training")
    parser.add_argument("--width", type=float, help="override the model's width multiplier")
    parser.add_argument("--cache-dir", type=Path, help="model cache (default results/cache/models or $TESTBED_CACHE)")


def _configs(args):
    from testbed.models.registry import resolve
    from testbed.models.train import DataConfig, TrainConfig

    try:
        resolve(args.model)
    except KeyError as exc:
        raise ConfigError("--model", str(exc.args[0])) from None
    data = DataConfig(name=args.data, size=args.size, channels=args.channels, root=args.data_root,
                      seed=args.seed, limit=args.limit)
    train = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                        threads=args.threads)
    model_kwargs = {"width": args.width} if args.width is not None else None
    return data, train, model_kwargs


def cmd_list(args) -> int:
    from testbed.models.registry import list_models

    for name, description in list_models().items():
        print(f"{name:22s} {description}")
    return 0


def cmd_train(args) -> int:
    from testbed.models.train import checkpoint_dir, train_and_card

    data, train, model_kwargs = _configs(args)
    out = args.out or checkpoint_dir(args.model, data, train, model_kwargs, args.cache_dir)
    _, card = train_and_card(args.model, data, train, model_kwargs, out_dir=out)
    print_card(card)
    print(f"\nwrote {out}/model.pt and {out}/card.json")
    return 0


def _checkpoint_for(args) -> Path:
    from testbed.models.train import checkpoint_dir, load_or_train

    if getattr(args, "checkpoint", None) or getattr(args, "path", None):
        return args.checkpoint if getattr(args, "checkpoint", None) else args.path
    data, train, model_kwargs = _configs(args)
    load_or_train(args.model, data, args.cache_dir, train, model_kwargs)
    return checkpoint_dir(args.model, data, train, model_kwargs, args.cache_dir)


def cmd_profile(args) -> int:
    from testbed.models.profile import profile_checkpoint

    directory = _checkpoint_for(args)
    try:
        profile = profile_checkpoint(directory, role=args.role, cpu_share=args.cpu_share, limit=args.cpu_limit,
                                     repeats=args.repeats, threads=args.profile_threads)
    except ValueError as exc:
        raise ConfigError("--cpu-share/--cpu-limit", str(exc)) from None
    print(f"{args.role} profile, cpu share {args.cpu_share} ({profile['cpu_limit']['method']}), "
          f"full model {profile['full_ms']:.3f} ms")
    print(f"{'split':8s} {'head_ms':>9s} {'tail_ms':>9s}")
    for row in profile["splits"]:
        print(f"{row['name']:8s} {row['head_ms']:9.3f} {row['tail_ms']:9.3f}")
    print(f"\nstored in {directory}/card.json under profiles.{args.role}")
    return 0


def cmd_card(args) -> int:
    from testbed.models.train import read_card

    path = args.path if args.path else _checkpoint_for(args)
    card = read_card(path)
    if args.json:
        print(json.dumps(card, indent=2))
    else:
        print_card(card)
    return 0


def cmd_family(args) -> int:
    from testbed.models.family import fit_latency_predictor, measure_family, rank_monotonicity

    shares = [None, *(float(s) for s in args.cpu_shares.split(",") if s.strip())]
    rows = measure_family(input_shape=(args.channels, args.size, args.size), cpu_shares=tuple(shares),
                          limit=args.cpu_limit)
    keys = list(rows[0]["latency_ms"])
    print(f"{'variant':20s} {'MFLOPs':>8s} {'kparams':>8s} {'layers':>6s} " + " ".join(f"{'ms@' + k:>12s}" for k in keys))
    for r in rows:
        print(f"{r['name']:20s} {r['flops'] / 1e6:8.2f} {r['params'] / 1e3:8.1f} {r['layers']:6d} "
              + " ".join(f"{r['latency_ms'][k]:12.3f}" for k in keys))
    for key in keys:
        p = fit_latency_predictor(rows, key)
        print(f"predictor @{key}: {p['ms_per_mflop']:.4f} ms/MFLOP + {p['ms_per_layer']:.4f} ms/layer "
              f"+ {p['intercept_ms']:.3f} ms, R^2 {p['r2']}")
    print("rank monotonicity (Spearman rho vs unlimited):", rank_monotonicity(rows))
    return 0


def print_card(card: dict) -> None:
    """Human-readable card: exits, splits (FLOPs, bytes), profiles."""
    ds = card["dataset"]
    print(f"model {card['model']}  params {card['params_total']:,}  data {ds['name']} {ds['input_shape']} "
          f"sizes {ds['sizes']}  test sha256 {ds['sha256']['test'][:16]}")
    training = card.get("training", {})
    print(f"trained {training.get('config', {}).get('epochs')} epochs in {training.get('train_seconds')} s "
          f"on {training.get('host', {}).get('cpu')}")
    print(f"\n{'exit':>4s} {'after':8s} {'test_acc':>8s} {'T':>6s} {'ECE_raw':>8s} {'ECE_cal':>8s} {'device_MFLOPs':>13s}")
    for e in card["exits"]:
        flops = e.get("device_flops_to_exit")
        print(f"{e['index']:4d} {e['after']:8s} {e['test_accuracy']:8.4f} {e['temperature']:6.3f} "
              f"{e['ece_raw']:8.4f} {e['ece_calibrated']:8.4f} {'' if flops is None else f'{flops / 1e6:13.3f}'}")
    if "splits" in card:
        print(f"\n{'split':8s} {'shape':14s} {'dev_MFLOPs':>10s} {'cloud_MFLOPs':>12s} {'fp32_B':>8s} {'fp16_B':>8s} "
              f"{'int8_B':>8s} {'int8zstd_B':>10s}")
        for s in card["splits"]:
            b = s["bytes"]
            print(f"{s['name']:8s} {'x'.join(map(str, s['shape'])):14s} {s['device_flops'] / 1e6:10.3f} "
                  f"{s['cloud_flops'] / 1e6:12.3f} {b['float32']:8.0f} {b['float16']:8.0f} {b['int8']:8.0f} "
                  f"{b['int8_zstd']:10.1f}")
    if "appeal" in card:
        appeal = card["appeal"]
        print(f"\nAppealNet: cloud {appeal['cloud_model']} acc {appeal['cloud_test_accuracy']}, mean q {appeal['mean_q']}")
        for row in appeal["tradeoff"]:
            print(f"  appeal rate {row['appeal_rate']:.2f}: q-gate {row['q_gate_accuracy']:.4f} "
                  f"softmax-gate {row['softmax_gate_accuracy']:.4f}")
    for role, profile in (card.get("profiles") or {}).items():
        if profile:
            print(f"\nprofile[{role}]: cpu share {profile['cpu_limit']['cpu_share']} "
                  f"({profile['cpu_limit']['method']}), full {profile['full_ms']:.3f} ms on {profile['host']['cpu']}")
