"""Split-able early-exit models, AppealNet pair, sparse variants, training, model cards, profiles.

Attributes load lazily so ``import testbed.models`` (and ``testbed --help``) does not import torch::

    from testbed.models import build_model, load_or_train
    model, card = load_or_train("resnet20-ee", "digits")
    features, exits = model.head(x, upto="s2b0")      # device
    logits = model.tail(features, start="s2b0")        # cloud
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "build_model": "registry", "list_models": "registry", "FAMILY": "registry", "MODELS": "registry",
    "SplittableNet": "nets", "ResNetEE": "nets", "MobileNetV2EE": "nets", "ExitInfo": "nets",
    "AppealEdgeNet": "appeal", "appeal_loss": "appeal", "appeal_tradeoff": "appeal",
    "TrainConfig": "train", "DataConfig": "train", "train_and_card": "train", "load_or_train": "train",
    "load_checkpoint": "train", "save_checkpoint": "train", "read_card": "train", "checkpoint_dir": "train",
    "CheckpointError": "train",
    "block_costs": "analysis", "split_bytes": "analysis", "tensor_bytes": "analysis", "encode_int8": "analysis",
    "sparsity_report": "analysis",
    "profile_model": "profile", "profile_checkpoint": "profile", "cpu_share_limit": "profile",
    "measure_family": "family", "fit_latency_predictor": "family", "rank_monotonicity": "family",
    "select_variant": "family",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"testbed.models.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'testbed.models' has no attribute {name!r}")
