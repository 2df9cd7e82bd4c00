"""Device profiles: fit quality per device on held-back networks, and what the profiles predict for our models.

    nice -n 10 .venv/bin/python benchmarks/device_profiles.py [--refresh-features] [--json out.json]

1. Refits every device's cost model from the cached features (``--refresh-features`` recounts them,
   about a minute per graph variant) on the seeded 80 % of the 1,999 measured networks and prints,
   side by side, the held-back MAPE and Spearman rank correlation of the shipped model, of a MACs-only
   baseline (conv + matmul MACs + intercept, same fit), and whether the refit reproduces
   ``testbed/devices/data/fitted.json``.
2. Predicted whole-model latency of the testbed's models at 28x28x1 and 32x32x3 on four devices.
3. An out-of-family check: MobileNetV2 (ImageNet, 224x224x3) predicted vs DeepEdgeBench's measured
   latency (a different framework and source: an order-of-magnitude check of extrapolation, not a
   validation).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from testbed.devices import get_profile, list_profiles
from testbed.devices.data_table import latency_table
from testbed.devices.features import FEATURES
from testbed.devices.fit import (
    fit_device,
    fitted_devices_json,
    holdout_mask,
    load_features,
    predict,
    validation_figures,
)
from testbed.models.nets import InvertedResidual
from testbed.models.registry import build_model

MODELS = ["resnet20-ee", "resnet-ee-w2.0-d3", "mobilenetv2-ee", "nb201-0"]
DEVICES = ["raspberry_pi4", "pixel3", "jetson_nano", "gtx1080ti"]
SHAPES = [(1, 28, 28), (3, 32, 32)]

# DeepEdgeBench (Baller et al., IC2E 2021) mean latency of MobileNetV2 float, batch 1, from the authors'
# raw data as derived in shared/notes/energy-parameters.md section 2.
DEEPEDGEBENCH_MOBILENETV2_MS = {
    "raspberry_pi4": [("TFLite", 193.01), ("TensorFlow", 207.55)],
    "jetson_nano": [("ONNX->TensorRT", 23.75), ("TensorFlow GPU", 20.78)],
}


def mobilenetv2_imagenet() -> nn.Module:
    """MobileNetV2 1.0 for 224x224 ImageNet (Sandler et al. 2018 layout), built from the testbed's blocks."""
    layers: list[nn.Module] = [nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6(inplace=True)]
    in_ch = 32
    for expand, channels, repeats, stride in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                                              (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]:
        for r in range(repeats):
            layers.append(InvertedResidual(in_ch, channels, stride if r == 0 else 1, expand))
            in_ch = channels
    layers += [nn.Conv2d(in_ch, 1280, 1, bias=False), nn.BatchNorm2d(1280), nn.ReLU6(inplace=True),
               nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1280, 1000)]
    return nn.Sequential(*layers)


def fit_table(features: dict[str, np.ndarray]) -> list[dict]:
    table = latency_table()
    held = holdout_mask(len(table.archs))
    shipped = fitted_devices_json()
    macs_only = [FEATURES.index("conv_kxk_macs"), FEATURES.index("matmul_macs")]
    rows = []
    for device in table.devices:
        y = table.column(device)
        measured = ~np.isnan(y)
        train, test = measured & ~held, measured & held
        graph = shipped[device]["graph"]
        x = features[graph]
        coef = fit_device(x[train], y[train])
        figures = validation_figures(predict(coef, x[test]), y[test])
        base_coef = fit_device(x[train][:, macs_only], y[train])
        baseline = validation_figures(predict(base_coef, x[test][:, macs_only]), y[test])
        rows.append({"device": device, "label": list_profiles()[device], "graph": graph,
                     "train_rows": int(train.sum()), "held_rows": int(test.sum()),
                     "held_back": figures, "macs_only_held_back": baseline,
                     "matches_fitted_json": figures == shipped[device]["held_back"]})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refresh-features", action="store_true", help="recount the cached features first")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(1)

    features = load_features(refresh=args.refresh_features, progress=True)
    rows = fit_table(features)
    print("1. Cost model per device, fitted on 80 % of the 1,999 networks (seed 0), judged on the other 20 %")
    print(f"{'device':20s} {'graph':7s} {'train':>5s} {'held':>5s} | {'MAPE %':>7s} {'Spearman':>8s} | "
          f"{'MACs-only MAPE %':>16s} {'Spearman':>8s} | = fitted.json")
    for r in rows:
        h, b = r["held_back"], r["macs_only_held_back"]
        print(f"{r['device']:20s} {r['graph']:7s} {r['train_rows']:5d} {r['held_rows']:5d} | {h['mape_pct']:7.2f} "
              f"{h['spearman']:8.3f} | {b['mape_pct']:16.2f} {b['spearman']:8.3f} | {r['matches_fitted_json']}")
    flagged = {r["device"]: r["label"] for r in rows if "[" in r["label"]}
    print("labels flagged:", "; ".join(f"{d}: {label}" for d, label in flagged.items()))

    print("\n2. Predicted whole-model latency, ms (batch 1; backbone + final exit)")
    predictions = []
    header = f"{'model':20s} {'input':8s} " + " ".join(f"{d:>14s}" for d in DEVICES)
    print(header)
    for name in MODELS:
        for shape in SHAPES:
            model = build_model(name, in_channels=shape[0], input_size=shape[1])
            values = {d: get_profile(d).model_costs(model, shape)["full_ms"] for d in DEVICES}
            predictions.append({"model": name, "input": list(shape), "full_ms": values})
            print(f"{name:20s} {'x'.join(map(str, shape)):8s} " + " ".join(f"{values[d]:14.2f}" for d in DEVICES))

    print("\n3. Out of family: MobileNetV2 1.0 at 224x224x3, predicted vs DeepEdgeBench measured (other framework)")
    mnv2 = mobilenetv2_imagenet()
    example = torch.zeros(1, 3, 224, 224)
    check = []
    for device, measured in DEEPEDGEBENCH_MOBILENETV2_MS.items():
        predicted = get_profile(device).module_ms(mnv2, example)
        for framework, ms in measured:
            check.append({"device": device, "framework": framework, "measured_ms": ms, "predicted_ms": predicted})
            print(f"{device:15s} {framework:16s} measured {ms:8.2f} ms  predicted {predicted:8.2f} ms  "
                  f"ratio {predicted / ms:5.2f}")
    if args.json:
        args.json.write_text(json.dumps({"fit": rows, "predictions": predictions, "out_of_family": check},
                                        indent=1) + "\n")
    return 0 if all(r["matches_fitted_json"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
