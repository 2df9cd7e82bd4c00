"""Bandwidth traces: the normalized on-disk format, readers for published layouts, transforms, stats.

>>> from testbed.traces import load_trace, constant, with_outages
>>> trace = load_trace("traces/att-lte-driving.csv")
>>> trace.rate("down", 12.3), trace.schedule("up", 0.1)[:3], trace.outages("down", 0.1)
"""

from testbed.traces.formats import FORMATS, detect_format, load_trace, save_trace
from testbed.traces.model import Trace, TraceError, combine, constant, steps, with_outages
from testbed.traces.stats import stats
from testbed.traces.transforms import clip, loop, resample, scale, slice_trace

__all__ = [
    "FORMATS",
    "Trace",
    "TraceError",
    "clip",
    "combine",
    "constant",
    "detect_format",
    "load_trace",
    "loop",
    "resample",
    "save_trace",
    "scale",
    "slice_trace",
    "stats",
    "steps",
    "with_outages",
]
