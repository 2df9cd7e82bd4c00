"""Passive network estimation on the device from its own transfers (plus idle probes).

Bandwidth samples come from each request's uplink time as the transport stamps it (server
receive − device send, one monotonic clock in all emulated hosts), never from local timing that a
throttled device would stretch. A token-bucket shaper lets its bucket (``BURST_BYTES``: the
emulator's HTB bucket is two MTUs at low rates) through at line rate, so only messages of at least
``MIN_SAMPLE_BYTES`` give a bandwidth sample, computed on the bytes beyond the bucket; smaller
ones (and probes sized down for a slow link) only show connectivity and RTT. RTT from probes and request round trips minus server time. A timeout or failure counts as a
bound ``bytes / waited`` (0 when nothing was sent) and marks the link down until the next success;
the first success after that replaces the estimate instead of averaging with the outage.

Requests still in flight bound the estimate too (:meth:`NetworkEstimator.estimates` with
``in_flight``): a request that has waited ``age`` seconds for ``bytes`` to cross proves the link
delivers at most ``bytes·8/age`` right now, so a trace step down or an outage shows within
~0.1 s instead of after the next deadline. EWMA with weight ``alpha`` per completed sample.
"""

from __future__ import annotations

from dataclasses import replace

from testbed.strategies.base import Estimates

MIN_SAMPLE_BYTES = 6000
BURST_BYTES = 3000
STALL_MIN_S = 0.05  # in-flight younger than this says nothing (scheduling noise)
STALL_FACTOR = 3.0  # ... nor one younger than 3x its predicted round trip
MIN_MBPS = 1e-3
SERVER_MEMORY_S = 2.0  # server load estimates relax toward "unloaded" with this half-life when unobserved


class NetworkEstimator:
    def __init__(self, alpha: float = 0.5, initial_mbps: float = 10.0, initial_rtt_ms: float = 2.0):
        self.alpha = alpha
        self.bw_up = initial_mbps
        self.bw_down = initial_mbps
        self.rtt_ms = initial_rtt_ms
        self.min_rtt_ms: float | None = None
        self.queue_ms = 0.0
        self.cloud_slowdown = 1.0
        self.device_slowdown = 1.0
        self.connected = True
        self.last_success: float | None = None
        self.samples = 0
        self.last_bw_sample: float | None = None
        self.last_server_sample: float | None = None
        self.cloud_floor: float | None = None  # the lowest server slowdown seen (an unloaded server)
        self._stale_up = self._stale_down = self._stale_rtt = False

    def _mix(self, old: float, new: float) -> float:
        return (1 - self.alpha) * old + self.alpha * new

    @staticmethod
    def _rate(seconds: float | None, nbytes: int) -> float | None:
        """Mbit/s from one transfer of ``nbytes`` taking ``seconds`` (None when it says nothing)."""
        if not seconds or seconds <= 0 or nbytes < MIN_SAMPLE_BYTES:
            return None
        return (nbytes - BURST_BYTES) * 8 / seconds / 1e6

    def on_success(self, now: float, bytes_up: int, bytes_down: int, uplink_s: float | None,
                   downlink_s: float | None, rtt_s: float | None, queue_s: float | None = None,
                   cloud_ratio: float | None = None) -> None:
        self.connected = True
        self.last_success = now
        self.samples += 1
        if rtt_s is not None and rtt_s > 0:
            self.min_rtt_ms = rtt_s * 1e3 if self.min_rtt_ms is None else min(self.min_rtt_ms, rtt_s * 1e3)
        # The first real sample after an outage replaces the estimate (the outage's zeros say
        # nothing about the link now); later ones are averaged.
        up = self._rate(uplink_s, bytes_up)
        if up:
            self.last_bw_sample = now
            self.bw_up = max(MIN_MBPS, up if self._stale_up else self._mix(self.bw_up, up))
            self._stale_up = False
        down = self._rate(downlink_s, bytes_down)
        if down:
            self.bw_down = max(MIN_MBPS, down if self._stale_down else self._mix(self.bw_down, down))
            self._stale_down = False
        elif self._stale_down and up:
            # Replies are small (logits) and rarely give a downlink sample: after an outage take the
            # uplink's recovery as the downlink's until a real sample comes.
            self.bw_down = max(self.bw_down, self.bw_up)
            self._stale_down = False
        if rtt_s is not None and rtt_s > 0:
            self.rtt_ms = rtt_s * 1e3 if self._stale_rtt else self._mix(self.rtt_ms, rtt_s * 1e3)
            self._stale_rtt = False
        if queue_s is not None or cloud_ratio is not None:
            self._relax_server(now)
            self.last_server_sample = now
        if queue_s is not None:
            self.queue_ms = self._mix(self.queue_ms, queue_s * 1e3)
        if cloud_ratio is not None and cloud_ratio > 0:
            self.cloud_floor = cloud_ratio if self.cloud_floor is None else min(self.cloud_floor, cloud_ratio)
            self.cloud_slowdown = self._mix(self.cloud_slowdown, min(cloud_ratio, 50.0))

    def _relax_server(self, now: float) -> None:
        """An old server-load sample says less and less: a device that stopped offloading because
        the server looked loaded must eventually try again (otherwise one slow reply, e.g. a cold
        start, keeps it off the server for the whole session)."""
        if self.last_server_sample is None or now <= self.last_server_sample:
            return
        keep = 0.5 ** ((now - self.last_server_sample) / SERVER_MEMORY_S)
        self.queue_ms *= keep
        floor = self.cloud_floor if self.cloud_floor is not None else 1.0
        self.cloud_slowdown = floor + (self.cloud_slowdown - floor) * keep
        self.last_server_sample = now

    def on_failure(self, now: float, waited_s: float, bytes_up: int = 0) -> None:
        """A timeout (or a send that never got through): at most ``bytes_up`` crossed in ``waited_s``."""
        self.samples += 1
        self.connected = False
        self._stale_up = self._stale_down = self._stale_rtt = True
        bound = bytes_up * 8 / waited_s / 1e6 if bytes_up and waited_s > 0 else 0.0
        self.bw_up = max(MIN_MBPS, min(self._mix(self.bw_up, 0.0), bound) if bound else self._mix(self.bw_up, 0.0))
        self.bw_down = max(MIN_MBPS, self._mix(self.bw_down, 0.0))
        self.rtt_ms = self._mix(self.rtt_ms, waited_s * 1e3)

    def on_device_compute(self, measured_ms: float, profiled_ms: float) -> None:
        """SPINN's SF = T_real / T_offline, smoothed."""
        if profiled_ms > 0 and measured_ms > 0:
            self.device_slowdown = 0.8 * self.device_slowdown + 0.2 * min(measured_ms / profiled_ms, 100.0)

    def estimates(self, now: float, in_flight=()) -> Estimates:
        """Current estimates; ``in_flight``: (bytes_up, age_s) of requests not answered yet."""
        since = now - self.last_success if self.last_success is not None else 0.0
        self._relax_server(now)
        est = Estimates(bw_up_mbps=self.bw_up, bw_down_mbps=self.bw_down, rtt_ms=self.rtt_ms,
                        connected=self.connected, cloud_queue_ms=self.queue_ms, cloud_slowdown=self.cloud_slowdown,
                        device_slowdown=self.device_slowdown, since_success_s=since)
        bound = None
        for nbytes, age in in_flight:
            expected = (self.rtt_ms + self.queue_ms) / 1e3 + nbytes * 8 / max(self.bw_up, MIN_MBPS) / 1e6
            if age > STALL_MIN_S and age > STALL_FACTOR * expected:
                rate = max(nbytes, 1) * 8 / age / 1e6
                bound = rate if bound is None else min(bound, rate)
        if bound is not None and bound < est.bw_up_mbps:
            est = replace(est, bw_up_mbps=max(MIN_MBPS, bound))
        return est
