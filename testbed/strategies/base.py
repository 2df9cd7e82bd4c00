"""The strategy interface: estimates and model profiles in, a plan out.

Strategies decide, the runtime executes. A strategy never opens a socket or reads a clock: the
device agent hands it the network/load :class:`Estimates` and a :class:`ModelProfile` per model
it holds, and executes the returned :class:`Plan`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from testbed.errors import ConfigError

INPUT = "input"
# Transport codec name -> key of the card's per-split byte table (testbed.models.analysis).
CODEC_BYTES_KEY = {"raw": "float32", "float16": "float16", "int8": "int8", "int8+zstd": "int8_zstd",
                   "int8+lz4": "int8_zstd"}
MESSAGE_OVERHEAD_BYTES = 600  # protocol header + framing per message (JSON header is ~0.4-0.6 kB)
REPLY_BYTES = 700  # a logits reply: header + 10 float32


@dataclass
class Estimates:
    """What the device knows about the network and the server right now (from its own transfers)."""

    bw_up_mbps: float = 10.0
    bw_down_mbps: float = 10.0
    rtt_ms: float = 2.0
    connected: bool = True  # False after a timeout with no success since
    cloud_queue_ms: float = 0.0  # EWMA of the server's reported queueing time
    cloud_slowdown: float = 1.0  # measured cloud compute / profiled cloud compute (server load)
    device_slowdown: float = 1.0  # SPINN's SF: measured device time / profiled device time
    since_success_s: float = 0.0


@dataclass(frozen=True)
class Plan:
    """How to run one request.

    ``split``: last split point computed on the device (``input`` = ship the raw input, the last
    block = everything on the device). ``exit_index``: the exit whose output answers (Edgent's
    right-sizing; None = final classifier). ``exit_threshold``: device exits up to the split answer
    as soon as their calibrated confidence reaches it (progressive inference); None = no early exits.
    ``fallback``: on timeout/disconnection answer with the best exit computed so far.
    ``appeal_threshold``: AppealNet mode, appeal to ``cloud_model`` when the edge's score < threshold;
    ``appeal_score``: which score, ``appeal`` (the edge's q(x) head) or ``max-softmax`` (its classifier's
    confidence: the gating baseline AppealNet is compared with).
    """

    split: str
    codec: str = "raw"
    exit_index: int | None = None
    exit_threshold: float | None = None
    fallback: bool = False
    deadline_s: float | None = None  # None: the session's deadline
    model: str | None = None  # None: the session's model
    cloud_model: str | None = None  # None: the same model's tail
    appeal_threshold: float | None = None
    appeal_score: str = "appeal"
    note: str = ""


@dataclass
class ModelProfile:
    """A model as strategies see it: per-split costs and per-sample exit confidences.

    ``device_ms[s]``/``cloud_ms[s]``: profiled head-to-``s`` and tail-from-``s`` times (batch 1).
    ``split_bytes[s][codec_key]``: mean wire bytes of the features at ``s``.
    ``confidences[n, e]``/``correct[n, e]``: calibrated max-softmax and correctness of exit ``e``
    on validation samples (progressive-inference statistics, SPINN's offline profiler).
    AppealNet edge models fill ``appeal_q``, ``edge_confidence`` (max-softmax), ``edge_correct`` and
    ``cloud_correct`` instead.
    """

    name: str
    split_points: list[str]
    device_ms: dict[str, float]
    cloud_ms: dict[str, float]
    split_bytes: dict[str, dict[str, float]]
    exit_after: list[str] = field(default_factory=list)
    exit_accuracy: list[float] = field(default_factory=list)
    exit_head_ms: list[float] = field(default_factory=list)
    confidences: np.ndarray | None = None
    correct: np.ndarray | None = None
    appeal_q: np.ndarray | None = None
    edge_confidence: np.ndarray | None = None
    edge_correct: np.ndarray | None = None
    cloud_correct: np.ndarray | None = None
    kind: str = "early-exit"  # or "appeal"
    extra: dict = field(default_factory=dict)

    @property
    def last_split(self) -> str:
        return self.split_points[-1]

    def position(self, split: str) -> int:
        return self.split_points.index(split)

    def exits_upto(self, split: str) -> list[int]:
        """Exit indices whose split point is at or before ``split`` (the device can evaluate them)."""
        pos = self.position(split)
        return [i for i, after in enumerate(self.exit_after) if self.position(after) <= pos]

    def bytes_at(self, split: str, codec: str) -> float:
        table = self.split_bytes.get(split, {})
        return float(table.get(CODEC_BYTES_KEY.get(codec, "float32"), table.get("float32", 0.0)))

    def progressive(self, split: str, threshold: float | None, exit_index: int | None = None) -> dict:
        """Predicted behaviour of (split, threshold): P(answer on device), accuracy, expected device ms.

        Device exits up to ``split`` answer when confidence >= threshold; the remaining samples go to
        the cloud, which answers with ``exit_index`` (final by default). With the split at the last
        block everything stays on the device and the final exit answers.
        """
        n_exits = len(self.exit_after)
        answer_exit = n_exits - 1 if exit_index is None else exit_index
        device_exits = [e for e in self.exits_upto(split) if e < answer_exit] if threshold is not None else []
        on_device = split == self.last_split or (
            self.position(self.exit_after[answer_exit]) <= self.position(split))
        if self.confidences is None or self.correct is None:
            acc = self.exit_accuracy[answer_exit] if self.exit_accuracy else float("nan")
            return {"p_device": 1.0 if on_device else 0.0, "accuracy": acc,
                    "device_ms": self.device_ms[split], "exit_rate": {}}
        n = len(self.confidences)
        remaining = np.ones(n, dtype=bool)
        correct = np.zeros(n, dtype=bool)
        expected_ms = 0.0
        exit_rate = {}
        for e in device_exits:
            hit = remaining & (self.confidences[:, e] >= threshold)
            exit_rate[e] = float(hit.mean())
            correct |= hit & self.correct[:, e]
            expected_ms += float(hit.mean()) * self.device_ms[self.exit_after[e]]
            remaining &= ~hit
        correct |= remaining & self.correct[:, answer_exit]
        p_remaining = float(remaining.mean())
        expected_ms += p_remaining * self.device_ms[split]
        return {"p_device": 1.0 if on_device else 1.0 - p_remaining, "accuracy": float(correct.mean()),
                "device_ms": expected_ms, "p_offload": 0.0 if on_device else p_remaining, "exit_rate": exit_rate}


@dataclass
class Context:
    """Static session facts a strategy may plan with."""

    model: str
    deadline_s: float
    sla: dict = field(default_factory=dict)
    device: str = "device"
    device_cpu: float | None = None
    fps: float = 5.0
    # Arrival time (s) of the request being planned on the trace's clock (0 = workload start), set by
    # the device agent before each plan call; only the hindsight ``oracle`` uses it.
    t_arrival: float | None = None


# --- parameters ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    """One strategy parameter: default, type and allowed range or choices (for validation)."""

    default: Any
    kind: type = float
    low: float | None = None
    high: float | None = None
    choices: tuple | None = None
    help: str = ""
    optional: bool = False  # None allowed

    def describe(self) -> str:
        if self.choices is not None:
            return f"one of {', '.join(map(repr, self.choices))}"
        bounds = []
        if self.low is not None:
            bounds.append(f">= {self.low:g}")
        if self.high is not None:
            bounds.append(f"<= {self.high:g}")
        return f"a {self.kind.__name__}{' ' + ' and '.join(bounds) if bounds else ''}" + (
            " or null" if self.optional else "")


def validate_params(strategy: str, schema: dict[str, Param], given: dict | None) -> dict[str, Any]:
    """Defaults overlaid with ``given``; ConfigError names the bad key and what is allowed."""
    given = dict(given or {})
    unknown = sorted(set(given) - set(schema))
    if unknown:
        allowed = ", ".join(sorted(schema)) or "(none)"
        raise ConfigError(f"strategy_params.{unknown[0]}",
                          f"unknown parameter for strategy {strategy!r}; allowed: {allowed}")
    out = {}
    for key, param in schema.items():
        value = given.get(key, param.default)
        where = f"strategy_params.{key}"
        if value is None:
            if param.optional or param.default is None:
                out[key] = None
                continue
            raise ConfigError(where, f"must be {param.describe()}, got null")
        if param.choices is not None:
            if value not in param.choices:
                raise ConfigError(where, f"must be {param.describe()}, got {value!r}")
        elif param.kind in (float, int):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                    param.kind is int and not float(value).is_integer()) or not math.isfinite(float(value)):
                raise ConfigError(where, f"must be {param.describe()}, got {value!r}")
            value = param.kind(value)
            if (param.low is not None and value < param.low) or (param.high is not None and value > param.high):
                raise ConfigError(where, f"must be {param.describe()}, got {value!r}")
        elif param.kind is bool:
            if not isinstance(value, bool):
                raise ConfigError(where, f"must be true or false, got {value!r}")
        elif param.kind is list:
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                raise ConfigError(where, f"must be a list of names, got {value!r}")
            value = list(value)
        elif not isinstance(value, param.kind):
            raise ConfigError(where, f"must be {param.describe()}, got {value!r}")
        out[key] = value
    return out


CODECS = ("raw", "float16", "int8", "int8+zstd")


class Strategy:
    """Base class: subclasses set ``name``, ``params`` and implement :meth:`plan`.

    ``models(session_model)`` says which models the device and the cloud must hold.
    ``uses_network`` false lets the runtime skip idle network probes.
    """

    name: ClassVar[str] = ""
    params: ClassVar[dict[str, Param]] = {}
    uses_network: ClassVar[bool] = True

    def __init__(self, params: dict | None = None):
        self.p = validate_params(self.name, self.params, params)

    def models(self, session_model: str) -> dict[str, list[str]]:
        return {"device": [session_model], "cloud": [session_model]}

    def setup(self, profiles: dict[str, ModelProfile], context: Context, estimates: Estimates) -> None:
        """Called once on the device before the workload (e.g. pick a model variant)."""

    def plan(self, estimates: Estimates, profiles: dict[str, ModelProfile], context: Context) -> Plan:
        raise NotImplementedError


# --- shared latency model (Neurosurgeon's formulation) -----------------------------------------------


def transfer_ms(nbytes: float, mbps: float) -> float:
    if mbps <= 1e-6:
        return math.inf
    return (nbytes + MESSAGE_OVERHEAD_BYTES) * 8 / (mbps * 1e3)


def offload_ms(profile: ModelProfile, split: str, codec: str, est: Estimates) -> float:
    """Network + server part of a split: RTT + uplink + queue + tail + reply downlink."""
    if not est.connected:
        return math.inf
    return (est.rtt_ms + transfer_ms(profile.bytes_at(split, codec), est.bw_up_mbps)
            + est.cloud_queue_ms + profile.cloud_ms[split] * est.cloud_slowdown
            + transfer_ms(REPLY_BYTES - MESSAGE_OVERHEAD_BYTES, est.bw_down_mbps))


def split_latency_ms(profile: ModelProfile, split: str, codec: str, est: Estimates) -> float:
    """Neurosurgeon: T(s) = device head(s) + [RTT + D_s/B + queue + server tail(s)] (0 when s is last)."""
    device = profile.device_ms[split] * est.device_slowdown
    if split == profile.last_split:
        return device
    return device + offload_ms(profile, split, codec, est)
