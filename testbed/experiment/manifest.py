"""``manifest.json``: everything needed to know what a run was and where it ran.

Written when a run starts, rewritten (atomically) after every completed unit and at the end, with
``status`` one of ``running``, ``complete``, ``partial`` (interrupted, or some units failed).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from testbed.experiment.schema import Experiment, trace_files

MANIFEST = "manifest.json"
PACKAGES = ("testbed", "torch", "numpy", "pyzmq", "pyyaml", "matplotlib", "scikit-learn", "tqdm", "lz4",
            "zstandard", "mininet")
REPO_ROOT = Path(__file__).resolve().parents[2]


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def git_commit() -> dict:
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(status) if status is not None else None}


def package_versions() -> dict:
    out = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def machine() -> dict:
    u = platform.uname()
    return {"system": u.system, "node": u.node, "release": u.release, "version": u.version, "machine": u.machine,
            "cpu_count": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else None}


def capabilities() -> dict:
    from testbed.emulation import capabilities as caps

    c = caps.probe().as_dict()
    c["not_emulated"] = [name for name, ok, _ in caps.probe().lines() if not ok]
    return c


def trace_checksums(exp: Experiment) -> dict:
    """sha256 of every trace file any cell reads."""
    out: dict[str, str] = {}
    base = exp.cells[0].config.get("_base") if exp.cells else None
    specs: list[Any] = []
    for cell in exp.cells:
        specs.extend((cell.config.get("traces") or {}).values())
    for spec in specs:
        for path in trace_files(spec, base):
            key = os.path.relpath(path, REPO_ROOT) if Path(path).is_absolute() else str(path)
            if key not in out and Path(path).exists():
                out[key] = sha256_file(path)
    return out


def build_manifest(exp: Experiment, run_id: str, argv: list[str] | None = None) -> dict:
    return {
        "experiment": exp.name,
        "run_id": run_id,
        "source": exp.source,
        "config": exp.raw,
        "config_hash": exp.config_hash(),
        "status": "running",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "finished": None,
        "argv": argv if argv is not None else sys.argv,
        "git": git_commit(),
        "packages": package_versions(),
        "capabilities": capabilities(),
        "machine": machine(),
        "trace_sha256": trace_checksums(exp),
        "seeds": exp.seeds,
        "strategies": [{"name": s.name, "label": s.label, "params": s.params} for s in exp.strategies],
        "axes": exp.axes,
        "cells": [{"cell_id": c.cell_id, "values": c.values} for c in exp.cells],
        "units": {},
        "resumed": [],
    }


def write_manifest(run_dir: Path, manifest: dict) -> None:
    tmp = run_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, default=str))
    os.replace(tmp, run_dir / MANIFEST)


def read_manifest(run_dir: str | Path) -> dict:
    path = Path(run_dir) / MANIFEST
    from testbed.errors import TestbedError

    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise TestbedError(f"{run_dir}: no {MANIFEST} (not a run folder of 'testbed run')") from None
    except json.JSONDecodeError as exc:
        raise TestbedError(f"{path}: unreadable manifest ({exc})") from None
