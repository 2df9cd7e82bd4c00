"""Profile the default models' cloud role on a GPU (run where one is lent), writing the profiles as JSON.

    python benchmarks/gpu_profile.py --checkpoints results/cache/models --out gpu_profiles.json

Each checkpoint directory's card gets ``profiles.gpu`` (batch 1, CUDA-synchronised per call); the
JSON collects them with the GPU's name so experiments can model a GPU cloud honestly, labelled as such.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from testbed.models.profile import profile_checkpoint  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--checkpoints", default="results/cache/models")
    p.add_argument("--out", default="gpu_profiles.json")
    p.add_argument("--repeats", type=int, default=50)
    a = p.parse_args()
    out = {}
    for d in sorted(Path(a.checkpoints).iterdir()):
        if (d / "card.json").exists() and (d / "model.pt").exists():
            prof = profile_checkpoint(d, role="gpu", repeats=a.repeats, write=True)
            out[d.name] = prof
            print(f"{d.name}: full {prof['full_ms']:.3f} ms on {prof['gpu']}", flush=True)
            for s in prof["splits"]:
                print(f"   split {s['name']:>8}: head {s['head_ms']:.3f} ms  tail {s['tail_ms']:.3f} ms")
    Path(a.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
