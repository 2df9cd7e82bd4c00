"""The GPU profile measured on a lent GPU machine reaches the default model's card (no GPU needed here)."""

from __future__ import annotations

import json
from pathlib import Path

from testbed.models.train import GPU_PROFILE_FILES, attach_stored_gpu_profile


def test_stored_gpu_profile_is_attached_and_labelled():
    stored = json.loads(next(GPU_PROFILE_FILES.glob("gpu_profiles_*.json")).read_text())
    key, profile = next(iter(stored.items()))
    card = {"profiles": {"device": None, "cloud": None, "gpu": None}}
    attach_stored_gpu_profile(card, key)
    gpu = card["profiles"]["gpu"]
    assert gpu["device"] == "cuda" and "measured on" in gpu["source"]
    assert [s["name"] for s in gpu["splits"]][0] == "input" and gpu["full_ms"] > 0


def test_unknown_checkpoint_gets_no_gpu_profile():
    card = {"profiles": {"device": None, "cloud": None, "gpu": None}}
    attach_stored_gpu_profile(card, "no-such-model-0000")
    assert card["profiles"]["gpu"] is None
    assert Path(GPU_PROFILE_FILES).is_dir()
