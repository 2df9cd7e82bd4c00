"""Passive network estimation on the device from its own transfers (plus idle probes).

Bandwidth samples come from each request's uplink time (server receive − device send, one
monotonic clock in all emulated hosts); RTT from probes and request round trips minus server
time. A timeout or failure counts as a 0 Mbit/s sample and marks the link down until the next
success. EWMA with weight ``alpha`` per sample (0.5: a step or outage shows within 1-2 samples,
i.e. within ~1 s with probes every 0.5 s).
"""

from __future__ import annotations

from testbed.strategies.base import Estimates

MIN_SAMPLE_BYTES = 256


class NetworkEstimator:
    def __init__(self, alpha: float = 0.5, initial_mbps: float = 10.0, initial_rtt_ms: float = 2.0):
        self.alpha = alpha
        self.bw_up = initial_mbps
        self.bw_down = initial_mbps
        self.rtt_ms = initial_rtt_ms
        self.queue_ms = 0.0
        self.cloud_slowdown = 1.0
        self.device_slowdown = 1.0
        self.connected = True
        self.last_success: float | None = None
        self.samples = 0

    def _mix(self, old: float, new: float) -> float:
        return (1 - self.alpha) * old + self.alpha * new

    def on_success(self, now: float, bytes_up: int, bytes_down: int, uplink_s: float | None,
                   downlink_s: float | None, rtt_s: float | None, queue_s: float | None = None,
                   cloud_ratio: float | None = None) -> None:
        self.connected = True
        self.last_success = now
        self.samples += 1
        if uplink_s and uplink_s > 0 and bytes_up >= MIN_SAMPLE_BYTES:
            self.bw_up = self._mix(self.bw_up, bytes_up * 8 / uplink_s / 1e6)
        if downlink_s and downlink_s > 0 and bytes_down >= MIN_SAMPLE_BYTES:
            self.bw_down = self._mix(self.bw_down, bytes_down * 8 / downlink_s / 1e6)
        if rtt_s is not None and rtt_s > 0:
            self.rtt_ms = self._mix(self.rtt_ms, rtt_s * 1e3)
        if queue_s is not None:
            self.queue_ms = self._mix(self.queue_ms, queue_s * 1e3)
        if cloud_ratio is not None and cloud_ratio > 0:
            self.cloud_slowdown = self._mix(self.cloud_slowdown, min(cloud_ratio, 50.0))

    def on_failure(self, now: float, waited_s: float) -> None:
        """A timeout (or a send that never got through): the link delivered nothing."""
        self.samples += 1
        self.connected = False
        self.bw_up = self._mix(self.bw_up, 0.0)
        self.bw_down = self._mix(self.bw_down, 0.0)
        self.rtt_ms = self._mix(self.rtt_ms, waited_s * 1e3)

    def on_device_compute(self, measured_ms: float, profiled_ms: float) -> None:
        """SPINN's SF = T_real / T_offline, smoothed."""
        if profiled_ms > 0 and measured_ms > 0:
            self.device_slowdown = 0.8 * self.device_slowdown + 0.2 * min(measured_ms / profiled_ms, 100.0)

    def estimates(self, now: float) -> Estimates:
        since = now - self.last_success if self.last_success is not None else 0.0
        return Estimates(bw_up_mbps=self.bw_up, bw_down_mbps=self.bw_down, rtt_ms=self.rtt_ms,
                         connected=self.connected, cloud_queue_ms=self.queue_ms, cloud_slowdown=self.cloud_slowdown,
                         device_slowdown=self.device_slowdown, since_success_s=since)
