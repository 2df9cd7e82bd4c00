"""The measured latency table: whole-network latency (ms) of 1,999 NAS-Bench-201 CNNs on 18 devices.

Read from the copy shipped with ``testbed.devices`` (``testbed/devices/data``); provenance, licence
(MIT, Ren-Research/OneProxy) and label caveats are in that folder's ``SOURCE.md``. An empty cell or
a negative value means the source has no measurement (259 rows of ``edgetpu_hwnasbench``).
"""

from __future__ import annotations

import csv
import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from testbed.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED_CSV = REPO_ROOT / "testbed" / "devices" / "data" / "nasbench201-latency-ms.csv"


def default_csv() -> Path:
    if not SHIPPED_CSV.is_file():
        raise FileNotFoundError(f"latency table not found at {SHIPPED_CSV} (shipped with testbed.devices)")
    return SHIPPED_CSV


@dataclass(eq=False)
class Measurements:
    """Rows = networks (``arch_index`` order), columns = devices, NaN where not measured."""

    archs: list[str]
    devices: list[str]
    ms: np.ndarray
    path: Path

    def column(self, device: str) -> np.ndarray:
        if device not in self.devices:
            raise ConfigError("device", f"unknown device {device!r}; measured devices: {', '.join(self.devices)}")
        return self.ms[:, self.devices.index(device)]

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()

    def complete_rows(self) -> np.ndarray:
        """Indices of networks measured on every device."""
        return np.flatnonzero(~np.isnan(self.ms).any(axis=1))


@functools.cache
def load_measurements(path: str | None = None) -> Measurements:
    source = Path(path) if path else default_csv()
    with open(source, newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        if header[:2] != ["arch_index", "arch"]:
            raise ValueError(f"{source}: first columns must be arch_index, arch; got {header[:2]}")
        archs, values = [], []
        for line_no, row in enumerate(reader, start=2):
            if len(row) != len(header) or int(row[0]) != line_no - 2:
                raise ValueError(f"{source}:{line_no}: expected {len(header)} fields and arch_index {line_no - 2}")
            archs.append(row[1])
            values.append([float(v) if v.strip() else np.nan for v in row[2:]])
    ms = np.array(values, dtype=float)
    ms[ms < 0] = np.nan  # the source's -1 = not measured
    return Measurements(archs, header[2:], ms, source)
