"""The shipped measurement table: whole-network latency (ms) of 1,999 NAS-Bench-201 CNNs on 18 devices.

``data/nasbench201-latency-ms.csv`` (provenance and licence in ``data/SOURCE.md``): one row per
architecture (``arch_index``, ``arch``), one column per device; an empty cell or a negative value
means the source has no measurement.
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATA_DIR = Path(__file__).resolve().parent / "data"
LATENCY_CSV = DATA_DIR / "nasbench201-latency-ms.csv"
FITTED_JSON = DATA_DIR / "fitted.json"  # per-device cost models, built by ``python -m testbed.devices.fit``


@dataclass(eq=False)
class LatencyTable:
    indices: np.ndarray            # arch_index per row
    archs: list[str]               # arch string per row
    devices: list[str]             # column names
    ms: np.ndarray                 # rows x devices, NaN where not measured

    def __post_init__(self):
        self._row_by_arch = {arch: row for row, arch in enumerate(self.archs)}

    def row_of(self, arch: str) -> int | None:
        return self._row_by_arch.get(arch)

    def column(self, device: str) -> np.ndarray:
        return self.ms[:, self.devices.index(device)]


@functools.cache
def latency_table(path: str | None = None) -> LatencyTable:
    """Read the latency CSV once per process."""
    source = Path(path) if path else LATENCY_CSV
    with open(source, newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        if header[:2] != ["arch_index", "arch"]:
            raise ValueError(f"{source}: first columns must be arch_index, arch; got {header[:2]}")
        indices, archs, values = [], [], []
        for line_no, row in enumerate(reader, start=2):
            if len(row) != len(header):
                raise ValueError(f"{source}:{line_no}: {len(row)} fields, expected {len(header)}")
            indices.append(int(row[0]))
            archs.append(row[1])
            values.append([float(v) if v.strip() else np.nan for v in row[2:]])
    ms = np.array(values, dtype=float)
    ms[ms < 0] = np.nan  # the source writes -1 for "not measured"
    if list(indices) != list(range(len(indices))):
        raise ValueError(f"{source}: arch_index must be 0..{len(indices) - 1} in order")
    return LatencyTable(np.array(indices), archs, header[2:], ms)


def nb201_arch(index: int) -> str:
    """``arch`` string of row ``index`` of the shipped table; KeyError naming the valid range."""
    table = latency_table()
    if not 0 <= index < len(table.archs):
        raise KeyError(f"nb201-{index}: arch_index must be 0..{len(table.archs) - 1} "
                       "(rows of testbed/devices/data/nasbench201-latency-ms.csv)")
    return table.archs[index]
