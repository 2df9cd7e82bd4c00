"""Model registry: ``build_model(name, **overrides)`` for every network the testbed ships.

Names are stable identifiers used in configs, caches and model cards; keyword overrides
(``width``, ``input_size``, ``in_channels``, ``num_classes`` ...) change the configuration and are
recorded in the card so a checkpoint can always be rebuilt.
"""

from __future__ import annotations

import re

# name -> (class path, default kwargs, one-line description)
MODELS: dict[str, tuple[str, dict, str]] = {
    "resnet20-ee": ("ResNetEE", dict(width=0.5, blocks_per_stage=3),
                    "CIFAR ResNet-20 (width 0.5), exits after s1b0, s2b0, s3b0 and the end"),
    "resnet20-ee-sparse": ("ResNetEE", dict(width=0.5, blocks_per_stage=3, groups=4),
                           "ResNet-20-EE with predefined 1/4 channel-group sparsity (grouped convs + shuffle)"),
    "resnet20-ee-wide": ("ResNetEE", dict(width=1.0, blocks_per_stage=3),
                         "ResNet-20-EE at full width (16/32/64 channels)"),
    "mobilenetv2-ee": ("MobileNetV2EE", dict(width=0.5, depth=1.0),
                       "MobileNetV2 (width 0.5) for small inputs, 3 exits"),
    "appealnet-edge": ("AppealEdgeNet", dict(width=0.25, blocks_per_stage=1),
                       "AppealNet little edge network (ResNet-8, width 0.25) with class + appeal heads"),
    "appealnet-cloud": ("ResNetEE", dict(width=1.0, blocks_per_stage=3),
                        "AppealNet big cloud model (ResNet-20 full width)"),
}

FAMILY_PATTERN = re.compile(r"^resnet-ee-w(?P<width>[0-9.]+)-d(?P<depth>[0-9]+)$")
# Device-aware selection family: widths x blocks-per-stage (ResNet-8/14/20 at 3 widths -> 6 used).
# NAS-Bench-201 network of row <arch_index> of testbed/devices/data/nasbench201-latency-ms.csv.
NB201_PATTERN = re.compile(r"^nb201-(?P<index>[0-9]+)$")
FAMILY = ["resnet-ee-w0.25-d1", "resnet-ee-w0.5-d1", "resnet-ee-w0.5-d2", "resnet-ee-w0.5-d3",
          "resnet-ee-w1.0-d2", "resnet-ee-w1.0-d3"]


def list_models() -> dict[str, str]:
    """Registered names with a description (family members are built from their name)."""
    names = {name: description for name, (_, _, description) in MODELS.items()}
    for name in FAMILY:
        names[name] = "device-aware family member (width w, d blocks per stage)"
    return names


def resolve(name: str, **overrides) -> tuple[str, dict]:
    """(class name, kwargs) for a model name; raises KeyError listing the known names.

    A user reference ``module:callable`` or ``file.py:callable`` resolves to ``("user", overrides)``
    once the callable imports (UserCodeError otherwise); see ``testbed.models.user``.
    """
    from testbed.user_code import is_user_ref, load_callable

    if is_user_ref(name):
        load_callable(name, "a function or class returning a torch nn.Module")
        return "user", dict(overrides)
    if name in MODELS:
        class_name, defaults, _ = MODELS[name]
        return class_name, {**defaults, **overrides}
    match = FAMILY_PATTERN.match(name)
    if match:
        defaults = dict(width=float(match["width"]), blocks_per_stage=int(match["depth"]))
        return "ResNetEE", {**defaults, **overrides}
    match = NB201_PATTERN.match(name)
    if match:
        from testbed.devices.data_table import nb201_arch

        index = int(match["index"])
        return "NASBench201Net", {"arch": nb201_arch(index), "arch_index": index, **overrides}
    raise KeyError(f"unknown model {name!r}; known: {', '.join(list_models())} "
                   "(or resnet-ee-w<width>-d<blocks per stage>, nb201-<arch_index>, or your own module:callable)")


def build_model(name: str, **overrides):
    """Build an untrained model by registry name; ``overrides`` change its configuration."""
    from testbed.models import appeal, nasbench201, nets

    class_name, kwargs = resolve(name, **overrides)
    if class_name == "user":
        from testbed.models.user import build_user_model

        model = build_user_model(name, **kwargs)
        model.registry_name = name
        return model
    cls = getattr(nets, class_name, None) or getattr(nasbench201, class_name, None) or getattr(appeal, class_name)
    model = cls(**kwargs)
    model.registry_name = name
    return model
