"""Device agent process: workload generator + strategy + execution + one JSONL record per request.

    python -m testbed.runtime.device --config session.json

The config (written by :func:`testbed.runtime.session.run_session`) names the device, the cloud
endpoint, the emulation's ``t0`` (monotonic), the checkpoints, dataset, strategy and workload.
The agent loads everything, writes ``ready_path``, waits for ``go_path`` (holding the agreed
monotonic start time), then runs the workload: open loop at ``fps`` (latency counts from each
frame's intended arrival time) or closed loop (next frame when the previous one finished).
Device compute is sequential; cloud requests are pipelined through the transport client and
never waited on past their deadline.

Deadlines: every wait of the loop is bounded by the earliest pending deadline (and the next
frame, and the next probe); each request is resolved exactly once, by its reply if that comes
before the deadline, else at the deadline as ``fallback_exit``/``timeout`` (a reply that is
processed after its deadline never counts as ``cloud``). A frame whose predicted device time no
longer fits before its deadline is answered ``timeout`` at once instead of occupying the device.
The loop's longest stall (time between two turns) is logged at the end and written to
``<out_path>.loop.json`` for diagnosis.

Paced execution (``device_profile``: a testbed.devices profile name): the host computes the real
tensors, then holds each result until the emulated device would have finished it. The device is
one accelerator with a virtual timeline: a request starts at max(arrival, the device's previous
finish) and its device part (head up to the split plus the exit heads it evaluated) takes the
profile's time for those parts, drawn with the profile's run-to-run spread (seeded per device).
The result is released (answered locally or sent to the cloud) at that instant; the loop keeps
handling replies meanwhile. A release more than 1 ms after the profiled finish (the host's own
compute took longer, or the loop woke late) is recorded as ``pace_late`` with ``pace_late_ms``;
latencies are always those of the real release.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from testbed.models.nets import max_softmax
from testbed.runtime.energy import EnergyModel
from testbed.runtime.estimator import NetworkEstimator
from testbed.runtime.execution import build_profile, run_head, timed_mean_ms
from testbed.runtime.realtime import ReleaseScheduling
from testbed.runtime.records import PACE_LATE_MS, new_record
from testbed.strategies import Context, get_strategy

log = logging.getLogger("testbed.runtime.device")
SEND_MARGIN_S = 0.005  # kept back from the deadline to turn a timeout into a fallback answer
MAX_POLL_S = 0.05  # longest single wait of the loop
PROBE_MIN_BYTES = 2048
POLL_SLACK_S = 0.0015  # the transport's poll rounds its wait up to whole ms: sleep the last part instead


@dataclass
class HeldResult:
    """A device result computed by the host, held until the emulated device finishes it."""

    release_at: float  # monotonic: the profiled finish (start + profiled duration)
    start: float  # monotonic: when the emulated device started this request
    record: dict
    release: Any  # callable run at the release instant (answer locally or send to the cloud)


@dataclass
class InFlight:
    request_id: int
    arrival: float
    deadline: float
    label: int
    plan: Any
    compute_s: float
    fallback: tuple | None  # (exit_index, logits) answered on timeout
    t_submit: float
    is_probe: bool = False
    extra: dict = field(default_factory=dict)
    bytes_up: int = 0


class DeviceAgent:
    def __init__(self, config: dict):
        from testbed.data import load_dataset
        from testbed.models import load_checkpoint

        self.cfg = config
        self.device = config["device"]
        self.t0 = float(config.get("t0", 0.0))  # trace time 0 (monotonic); set from go.json at the start
        self.deadline_s = float(config["deadline_s"])
        self.phase_s = float(config.get("phase_s", 0.0))  # open loop: first request this long after t0
        self.strategy = get_strategy(config["strategy"], config.get("strategy_params"))
        torch.set_num_threads(1)
        torch.manual_seed(config.get("seed", 0))
        self.models: dict[str, tuple] = {}
        for name, directory in config["models"].items():
            model, card = load_checkpoint(directory)
            self.models[name] = (model, card)
        first_card = next(iter(self.models.values()))[1]
        options = first_card["dataset"]["options"]
        # The data the models trained on: the same directory (data_root) and training-image limit, so the
        # test images are normalised with the same statistics.
        dataset = load_dataset(config.get("data", "digits"), root=config.get("data_root"), size=options["size"],
                               channels=options["channels"], seed=options.get("seed", 0), limit=options.get("limit"))
        self.test = dataset.test
        self.session_model = config["session_model"]
        self.hardware = self.server_hardware = None  # testbed.devices profiles (paced mode)
        if config.get("device_profile"):
            from testbed.devices import get_profile

            self.hardware = get_profile(config["device_profile"])
            if config.get("server_profile"):
                self.server_hardware = get_profile(config["server_profile"])
        self.costs: dict[str, dict] = {}  # model name -> the device profile's model_costs
        self.profiles = {}
        proxy_ms = config.get("proxy_ms", {})
        for i, (name, (model, card)) in enumerate(self.models.items()):
            sample = torch.from_numpy(dataset.test.x[:1])
            measure_this = (i == 0 or not (card.get("profiles") or {}).get("device")) and self.hardware is None
            with torch.no_grad():
                measured = timed_mean_ms(lambda m=model, s=sample: m(s), window_s=0.3) if measure_this else None
                profile = build_profile(name, model, card, dataset.val.x, dataset.val.y, measured,
                                        checkpoint_dir=config["models"][name])
            if name in proxy_ms:
                profile.extra["proxy_ms"] = proxy_ms[name]
            if i > 0 and name in proxy_ms:  # device-aware: only the reference model is measured here
                profile.extra.pop("device_ms_measured", None)
            if self.hardware is not None:
                self.costs[name] = self.apply_hardware(profile, model, card, i == 0)
            self.profiles[name] = profile
        self.estimator = NetworkEstimator()
        first = self.profiles[next(iter(self.profiles))]
        if first.kind != "appeal" and "device_ms_measured" in first.extra:
            profiled = first.device_ms[first.last_split]
            if profiled > 0:
                self.estimator.device_slowdown = first.extra["device_ms_measured"] / profiled
        self.context = Context(model=self.session_model, deadline_s=self.deadline_s, sla=config.get("sla") or {},
                               device=self.device, device_cpu=config.get("cpu"), fps=float(config.get("fps", 5)))
        self.energy = EnergyModel.from_dict(config.get("energy"), self.hardware)
        log.info("%s: energy model %s", self.device, self.energy.sources)
        self.rng = np.random.default_rng(config.get("seed", 0))
        # Run-to-run spread of the paced device: its own stream, seeded per device (seed differs per device).
        self.pace_rng = np.random.default_rng([int(config.get("seed", 0)), 0x9ACE])
        self.device_free_at = 0.0  # monotonic: when the emulated device finishes its current work
        self.held: HeldResult | None = None
        # While a result is held the agent only waits: it waits as real time (see testbed.runtime.realtime).
        self.release_scheduling = ReleaseScheduling()
        self.order = self.rng.permutation(len(self.test))
        self.out = open(config["out_path"], "w")  # noqa: SIM115 - closed in run()
        self.client = None
        self.in_flight: dict[int, InFlight] = {}
        self.last_network_activity = 0.0
        self.probe_interval = float(config.get("probe_interval_s", 0.5))
        self.probe_bytes = int(config.get("probe_bytes", 16384))
        self.probe_size = self.probe_bytes
        self.last_probe = 0.0
        self.n_records = 0
        self.resolved: set[int] = set()
        self.loop_stats = {"turns": 0, "max_gap_s": 0.0, "gaps_over_100ms": 0, "late_replies": 0,
                           "hopeless_frames": 0, "agent_expired": 0, "paced": 0, "pace_late": 0, "host_slower_than_profile": 0,
                           "workload_start_s": None, "realtime_release": None, "realtime_compute": 0}

    def apply_hardware(self, profile, model, card: dict, reference: bool) -> dict:
        """Give the strategies the device profile's times for ``model`` (and the server's, if any)."""
        shape = tuple(card["dataset"]["input_shape"])
        costs = self.hardware.model_costs(model, shape)
        if profile.kind == "appeal":
            profile.device_ms["edge"] = costs["full_ms"]
        else:
            profile.device_ms = {split: float(costs["head_ms"][split]) for split in profile.split_points}
            profile.exit_head_ms = [float(ms) for ms in costs["exit_ms"]]
        if self.server_hardware is not None and profile.kind != "appeal":
            tail = self.server_hardware.model_costs(model, shape)["tail_ms"]
            profile.cloud_ms = {split: float(tail[split]) for split in profile.split_points}
        # What the strategies call measured device time is, for a paced device, the profile's.
        profile.extra["device_ms_measured"] = costs["full_ms"]
        if not reference:
            profile.extra.pop("device_ms_measured")
        profile.extra["proxy_ms"] = costs["full_ms"]  # device-aware: the variant's time on this hardware
        profile.extra["hardware"] = self.hardware.name
        return costs

    # -- records ---------------------------------------------------------------------------------
    def write(self, record: dict) -> None:
        self.out.write(json.dumps(record) + "\n")
        self.out.flush()
        self.n_records += 1

    def base_record(self, request_id: int, arrival: float, label: int, plan) -> dict:
        est = self.current_estimates(time.monotonic())
        return new_record(
            request_id=request_id, device=self.device, strategy=self.strategy.name,
            model=(plan.model or self.session_model) if plan else None, t_arrival=arrival - self.t0, deadline_s=self.deadline_s, label=int(label),
            split=plan.split if plan else None, codec=plan.codec if plan else None,
            est_bw_mbps=round(est.bw_up_mbps, 4), est_rtt_ms=round(est.rtt_ms, 3),
            bytes_up=0, bytes_down=0, device_compute_s=0.0, encode_s=None, decode_s=None, transfer_s=None,
            cloud_queue_s=None, cloud_compute_s=None, exit_index=None, prediction=None, correct=None)

    def current_estimates(self, now: float):
        """The estimator's view, bounded by what requests still in flight prove about the link."""
        in_flight = [(f.bytes_up, now - f.t_submit) for f in self.in_flight.values()]
        return self.estimator.estimates(now, in_flight)

    def finish(self, record: dict, outcome: str, arrival: float, energy_j: float,
               exit_index=None, logits=None) -> None:
        if record["request_id"] in self.resolved:  # a bug: never write a second record for a request
            log.error("request %s resolved twice (second outcome %s dropped)", record["request_id"], outcome)
            return
        self.resolved.add(record["request_id"])
        now = time.monotonic()
        record["outcome"] = outcome
        record["t_finish"] = now - self.t0
        record["latency_s"] = record["t_finish"] - record["t_arrival"]
        record["energy_j"] = energy_j
        if logits is not None:
            prediction = int(np.asarray(logits).reshape(-1, np.asarray(logits).shape[-1]).argmax(1)[0])
            record["prediction"] = prediction
            record["correct"] = prediction == record["label"]
            record["exit_index"] = exit_index
        self.write(record)

    # -- one request -----------------------------------------------------------------------------
    def process(self, request_id: int, arrival: float) -> None:
        index = int(self.order[request_id % len(self.order)])
        image, label = self.test.x[index: index + 1], int(self.test.y[index])
        deadline = arrival + self.deadline_s
        self.drain()
        now = time.monotonic()
        start = max(arrival, self.device_free_at) if self.hardware is not None else now
        if now >= deadline - SEND_MARGIN_S:  # the device was busy past this frame's deadline
            record = self.base_record(request_id, arrival, label, None)
            self.finish(record, "timeout", arrival, 0.0)
            return
        self.context.t_arrival = arrival - self.t0  # trace clock, for the hindsight oracle
        plan = self.strategy.plan(self.current_estimates(now), self.profiles, self.context)
        record = self.base_record(request_id, arrival, label, plan)
        model_name = plan.model or self.session_model
        model, card = self.models[model_name]
        if max(now, start) + self.predicted_head_s(model_name, plan) >= deadline - SEND_MARGIN_S:
            # Starting the head now would only finish past the deadline: answer now, keep the device free.
            self.loop_stats["hopeless_frames"] += 1
            record["split"] = record["codec"] = None
            self.finish(record, "timeout", arrival, 0.0)
            return
        if self.hardware is not None:  # one emulated accelerator: run to completion (realtime.py);
            # every path below ends in release(), which drops back to the default scheduler
            self.loop_stats["realtime_compute"] += self.release_scheduling.compute()
        x = torch.from_numpy(image)
        t_c0 = time.monotonic()
        profile = self.profiles[model_name]
        if plan.appeal_threshold is not None:
            with torch.no_grad():
                logits, q = model.forward_with_appeal(x)
                if plan.appeal_score == "max-softmax":
                    q = max_softmax(logits)
            compute_s = self.device_time_s(model_name, time.monotonic() - t_c0)
            if float(q[0]) >= plan.appeal_threshold:
                def answer():
                    record["split"] = "edge"
                    self.finish(record, "device_exit", arrival, self.energy.request_energy(compute_s), 0, logits)
                self.release(record, start, compute_s, answer)
                return
            features, fallback = x, (0, logits)
        else:
            evaluate = plan.exit_threshold is not None or plan.fallback
            head = run_head(model, card, x, plan.split, plan.exit_index, plan.exit_threshold, evaluate)
            compute_s = self.device_time_s(model_name, time.monotonic() - t_c0, head)
            if head.answer_exit is not None:
                if plan.exit_threshold is None and head.answer_exit == len(profile.exit_after) - 1:
                    self.estimator.on_device_compute(compute_s * 1e3, profile.device_ms[profile.last_split])

                def answer():
                    self.finish(record, "device_exit", arrival, self.energy.request_energy(compute_s),
                                head.answer_exit, head.answer_logits.numpy())
                self.release(record, start, compute_s, answer)
                return
            if plan.split != "input" and not evaluate:
                self.estimator.on_device_compute(compute_s * 1e3, profile.device_ms[plan.split])
            features = head.features
            fallback = (head.best_exit[0], head.best_exit[1]) if (plan.fallback and head.best_exit) else None
        meta = {"model": plan.cloud_model or model_name, "split": plan.split if plan.appeal_threshold is None
                else "input", "exit": plan.exit_index}
        self.release(record, start, compute_s,
                     lambda: self.offload(record, arrival, deadline, label, plan, compute_s, features, fallback, meta))

    def device_time_s(self, model_name: str, host_s: float, head=None) -> float:
        """The device part's time: the host's own compute time, or (paced) the profile's, with spread.

        A paced head is charged for the blocks it ran and the exit heads it evaluated.
        """
        if self.hardware is None:
            return host_s
        costs = self.costs[model_name]
        if head is None:
            nominal = costs["full_ms"]
        else:
            model = self.models[model_name][0]
            nominal = costs["head_ms"][model.split_points[head.blocks_run]] + sum(
                costs["exit_ms"][e] for e in head.exits_run)
        return self.hardware.sample_ms(nominal, self.pace_rng) / 1e3 if nominal > 0 else 0.0

    def release(self, record: dict, start: float, compute_s: float, action) -> None:
        """Run ``action`` now (CPU-share mode) or hold it until the paced device finishes (start + compute)."""
        record["device_compute_s"] = compute_s
        if self.hardware is None:
            action()
            return
        self.device_free_at = start + compute_s
        # Diagnosis of lateness: the host's own compute already ran past the profiled finish.
        self.loop_stats["host_slower_than_profile"] += time.monotonic() > self.device_free_at + PACE_LATE_MS / 1e3
        self.held = HeldResult(self.device_free_at, start, record, action)
        granted = self.release_scheduling.enter()
        if self.loop_stats["realtime_release"] is None:  # the first release says whether real time was granted
            self.loop_stats["realtime_release"] = granted or self.release_scheduling.reason
        self.release_due()

    def release_due(self) -> None:
        """Release the held result if its profiled finish has come (the loop waits for that instant)."""
        held = self.held
        if held is None or time.monotonic() < held.release_at:
            return
        self.held = None
        now = time.monotonic()
        late_ms = (now - held.release_at) * 1e3
        held.record["device_compute_s"] = now - held.start  # what the device part really took, lateness included
        held.record["pace_late_ms"] = round(late_ms, 3)
        held.record["pace_late"] = late_ms > PACE_LATE_MS
        self.loop_stats["paced"] += 1
        self.loop_stats["pace_late"] += late_ms > PACE_LATE_MS
        try:
            held.release()
        finally:
            self.release_scheduling.leave()  # the agent's loop (polls, sends) runs under the default scheduler

    def offload(self, record, arrival, deadline, label, plan, compute_s, features, fallback, meta) -> None:
        """Send the head's output to the cloud (at the instant the device part finished)."""
        remaining = deadline - time.monotonic() - SEND_MARGIN_S
        if remaining <= 0:
            self.give_up(record, arrival, compute_s, fallback, "timeout")
            return
        try:
            seq = self.client.submit({"x": features.numpy()}, op="infer", deadline_s=remaining, codec=plan.codec,
                                     meta=meta)
        except Exception as exc:  # noqa: BLE001 - a refused send is a failed request, not a crash
            log.warning("submit failed: %s", exc)
            self.give_up(record, arrival, compute_s, fallback, "failed")
            return
        self.last_network_activity = time.monotonic()
        self.in_flight[seq] = InFlight(record["request_id"], arrival, deadline, label, plan, compute_s, fallback,
                                       time.monotonic(), extra={"record": record},
                                       bytes_up=int(features.numel() * features.element_size()))

    def predicted_head_s(self, model_name: str, plan) -> float:
        """Expected device time of ``plan``'s head (profiled x the measured slowdown), seconds."""
        profile = self.profiles.get(model_name)
        if profile is None:
            return 0.0
        if profile.kind == "appeal" or plan.appeal_threshold is not None:
            ms = profile.extra.get("device_ms_measured", 0.0)
            return ms / 1e3
        split = plan.split if plan.split in profile.device_ms else profile.last_split
        if plan.exit_index is not None and plan.split not in profile.device_ms:
            split = profile.exit_after[plan.exit_index]
        # Only the exits' cheap best case can save a frame: use the first exit when early exits are on.
        if plan.exit_threshold is not None and profile.exit_after:
            first = profile.exit_after[0]
            if profile.position(first) < profile.position(split):
                split = first
        return profile.device_ms.get(split, 0.0) * self.estimator.device_slowdown / 1e3

    def give_up(self, record, arrival, compute_s, fallback, outcome, t_start=None, t_end=None, waited_s=0.0):
        energy = self.energy.request_energy(compute_s, record["bytes_up"] or 0, record["bytes_down"] or 0,
                                            waited_s, t_start, t_end)
        if fallback is not None:
            self.finish(record, "fallback_exit", arrival, energy, fallback[0], fallback[1].numpy())
        else:
            self.finish(record, outcome, arrival, energy)

    # -- results ---------------------------------------------------------------------------------
    def on_result(self, result) -> None:
        flight = self.in_flight.pop(result.seq, None)
        if flight is None:
            return
        now = time.monotonic()
        ts = result.timestamps
        uplink = (ts["t_rx"] - ts["t_send"]) / 1e9 if "t_rx" in ts and "t_send" in ts else None
        downlink = (ts["t_recv"] - ts["t_tx"]) / 1e9 if "t_recv" in ts and "t_tx" in ts else None
        if flight.is_probe:
            quick = result.ok and now - flight.t_submit < self.probe_interval / 4
            self.probe_size = min(self.probe_bytes, self.probe_size * 8) if quick else \
                max(PROBE_MIN_BYTES, self.probe_size // 8)
            if result.ok:
                # RTT = twice the small reply's one-way time (the probe's own uplink transfer is
                # bandwidth, not latency)
                self.estimator.on_success(now, result.bytes_up, result.bytes_down, uplink, None,
                                          2 * downlink if downlink is not None else None)
            elif result.status == "timeout":
                self.estimator.on_failure(now, now - flight.t_submit, flight.bytes_up if result.attempts else 0)
            return
        record = flight.extra["record"]
        record["bytes_up"], record["bytes_down"] = result.bytes_up, result.bytes_down
        record["encode_s"], record["decode_s"] = result.encode_s, result.decode_s
        info = result.info or {}
        # A paced cloud (server profile) reports its profiled compute apart from the transport's handler time
        cloud_compute_s = info.get("profiled_compute_s", info.get("compute_s"))
        record["cloud_queue_s"], record["cloud_compute_s"] = info.get("queue_s"), cloud_compute_s
        if result.ok and now > flight.deadline:
            # Arrived, but only handled after the deadline: the link delivered (tell the estimator),
            # the request itself is resolved as at its deadline.
            self.loop_stats["late_replies"] += 1
            self.estimator.on_success(now, result.bytes_up, result.bytes_down, uplink, downlink, None)
            record["transfer_s"] = now - flight.t_submit
            self.give_up(record, flight.arrival, flight.compute_s, flight.fallback, "timeout",
                         flight.t_submit - self.t0, now - self.t0, now - flight.t_submit)
            return
        if result.ok:
            transfer = (uplink or 0.0) + (downlink or 0.0)
            record["transfer_s"] = transfer
            rtt = 2 * downlink if downlink is not None else None  # see the probes
            profile = self.profiles.get(flight.plan.cloud_model or flight.plan.model or self.session_model)
            ratio = None
            if profile is not None and profile.kind != "appeal" and cloud_compute_s:
                profiled = profile.cloud_ms.get(record["split"] or "input", 0.0)
                ratio = cloud_compute_s * 1e3 / profiled if profiled > 0 else None
            self.estimator.on_success(now, result.bytes_up, result.bytes_down, uplink, downlink, rtt,
                                      info.get("queue_s"), ratio)
            energy = self.energy.request_energy(flight.compute_s, result.bytes_up, result.bytes_down, transfer,
                                                flight.t_submit - self.t0, now - self.t0)
            self.finish(record, "cloud", flight.arrival, energy, flight.plan.exit_index
                        if flight.plan.exit_index is not None else -1, result.tensors["logits"])
            return
        waited = now - flight.t_submit
        record["transfer_s"] = waited
        if result.status == "timeout":
            self.estimator.on_failure(now, waited, flight.bytes_up if result.attempts else 0)
        outcome = "timeout" if result.status in ("timeout", "expired", "cancelled") else "failed"
        self.give_up(record, flight.arrival, flight.compute_s, flight.fallback, outcome,
                     flight.t_submit - self.t0, now - self.t0, waited)

    def maybe_probe(self, now: float) -> None:
        if not self.strategy.uses_network or any(f.is_probe for f in self.in_flight.values()):
            return
        # Probe when idle, and also when busy with messages too small to show the bandwidth
        # (e.g. a 4 kB input), at most once per second then.
        last_sample = max(self.estimator.last_bw_sample or 0.0, self.last_probe)
        if now - self.last_network_activity < self.probe_interval and now - last_sample < 2 * self.probe_interval:
            return
        # Sized down after a failed probe (a 16 kB probe needs seconds on a 0.05 Mbit/s link and
        # would clog the queue for the requests behind it), back up after a quick success.
        size = self.probe_size
        try:
            seq = self.client.submit({"p": self._probe_payload[:size]}, op="discard", deadline_s=self.probe_interval)
        except Exception:  # noqa: BLE001
            return
        self.last_network_activity = self.last_probe = now
        self.in_flight[seq] = InFlight(-1, now, now + self.probe_interval, -1, None, 0.0, None, now, is_probe=True,
                                       bytes_up=size)

    def drain(self) -> None:
        """Handle every result already there, without waiting."""
        for result in self.client.poll(timeout=0.0):
            self.on_result(result)
        self.expire(time.monotonic())

    def expire(self, now: float) -> None:
        """Resolve requests whose deadline has passed even if the client has not reported them yet."""
        for seq, flight in list(self.in_flight.items()):
            if flight.is_probe or now < flight.deadline - SEND_MARGIN_S / 2:
                continue
            del self.in_flight[seq]
            self.loop_stats["agent_expired"] += 1
            record = flight.extra["record"]
            waited = now - flight.t_submit
            record["transfer_s"] = waited
            self.estimator.on_failure(now, waited, flight.bytes_up)
            self.give_up(record, flight.arrival, flight.compute_s, flight.fallback, "timeout",
                         flight.t_submit - self.t0, now - self.t0, waited)

    # -- main loop -------------------------------------------------------------------------------
    def warm_up(self) -> None:
        """Run every code path once before joining the CPU limit.

        Under a small CPU share a one-off cost (lazy imports, first allocations, codec set-up) of
        50 ms CPU becomes seconds of wall time and would stall the first requests.
        """
        from testbed.transport import encode
        from testbed.transport.codecs import available_codecs

        sample = torch.from_numpy(self.test.x[:1])
        with torch.no_grad():
            for model, card in self.models.values():
                if hasattr(model, "forward_with_appeal"):
                    model.forward_with_appeal(sample)
                    continue
                for split in model.split_points:
                    head = run_head(model, card, sample, split, None, 0.0, True)
                    head = run_head(model, card, sample, split, None, None, True)
                    if head.features is not None:
                        for codec in ("raw", "float16", "int8", "int8+zstd"):
                            if codec in available_codecs():
                                encode(head.features.numpy(), codec)
        self.strategy.plan(self.estimator.estimates(time.monotonic()), self.profiles, self.context)
        self._probe_payload = np.zeros(self.probe_bytes, np.uint8)
        self.client.submit({"p": self._probe_payload[:PROBE_MIN_BYTES]}, op="discard", deadline_s=2.0)
        self.client.poll(timeout=2.0)
        ping = self.client.ping(deadline_s=2.0)
        if ping.ok:
            self.estimator.on_success(time.monotonic(), 0, 0, None, None, ping.latency_s)
        json.dumps(self.base_record(0, time.monotonic(), 0, None))

    def run(self) -> int:
        from testbed.transport import Client

        self.client = Client(self.cfg["endpoint"])
        try:
            self.warm_up()
            if self.cfg.get("load_delay_s"):  # an emulated slow loader (SessionConfig.device_load_delay_s)
                time.sleep(float(self.cfg["load_delay_s"]))
            if self.cfg.get("ready_path"):
                Path(self.cfg["ready_path"]).write_text(json.dumps({"device": self.device}))
            go = Path(self.cfg["go_path"]) if self.cfg.get("go_path") else None
            while go is not None and not go.exists():
                time.sleep(0.01)
            start = json.loads(go.read_text()) if go else {"t_start": time.monotonic()}
            t_start = float(start["t_start"])
            self.t0 = float(start.get("t0", self.cfg.get("t0", t_start)))  # trace time 0
            self.calibrate(deadline=t_start - 0.1)
            while time.monotonic() < t_start:
                time.sleep(0.0005 if t_start - time.monotonic() < 0.01 else 0.005)
            self.loop_stats["workload_start_s"] = time.monotonic() - self.t0
            self.workload(t_start)
            if self.cfg.get("workload", "open") == "open":
                # Other devices' last requests (a later phase) may still be computing; this agent's
                # teardown (freeing hundreds of MB) would take their CPU. Leave when the last phase ends.
                fps = float(self.cfg.get("fps", 5.0))
                hold = t_start + float(self.cfg["duration_s"]) + 1.0 / fps + 0.05 - time.monotonic()
                if hold > 0:
                    time.sleep(min(hold, 2.0))
        finally:
            self.out.close()
            self.client.close()
            try:
                Path(self.cfg["out_path"] + ".loop.json").write_text(json.dumps(
                    {**self.loop_stats, "client": self.client.stats()}))
            except OSError:
                pass
        log.info("%s: %d records; loop %s", self.device, self.n_records, self.loop_stats)
        return 0

    def calibrate(self, deadline: float) -> None:
        """SPINN's SF at the start, now that the agent runs under the host's CPU limit.

        A paced device computes at its profile's speed by construction: SF starts at 1 and follows
        the paced times (the profile's spread) from then on.
        """
        if self.hardware is not None:
            self.estimator.device_slowdown = 1.0
            self.strategy.setup(self.profiles, self.context, self.current_estimates(time.monotonic()))
            return
        name = next(iter(self.models))
        model, _ = self.models[name]
        profile = self.profiles[name]
        sample = torch.from_numpy(self.test.x[:1])
        window = max(0.05, min(0.3, deadline - time.monotonic() - 0.05))
        with torch.no_grad():
            measured = timed_mean_ms(lambda: model(sample), window_s=window)
        profile.extra["device_ms_measured"] = measured
        if profile.kind != "appeal" and profile.device_ms[profile.last_split] > 0:
            self.estimator.device_slowdown = measured / profile.device_ms[profile.last_split]
        self.strategy.setup(self.profiles, self.context, self.current_estimates(time.monotonic()))

    def workload(self, t_start: float) -> None:
        fps = float(self.cfg.get("fps", 5.0))
        duration = float(self.cfg["duration_s"])
        closed = self.cfg.get("workload", "open") == "closed"
        total = int(round(duration * fps)) if not closed else None
        t_end = t_start + duration
        self.last_network_activity = self.last_probe = t_start
        next_id = 0
        last_turn = time.monotonic()
        while True:
            self.release_due()
            now = time.monotonic()
            gap = now - last_turn
            last_turn = now
            self.loop_stats["turns"] += 1
            self.loop_stats["max_gap_s"] = max(self.loop_stats["max_gap_s"], gap)
            self.loop_stats["gaps_over_100ms"] += gap > 0.1
            self.expire(now)
            device_busy = self.held is not None  # a paced device runs one request at a time
            if closed:
                busy = device_busy or any(not f.is_probe for f in self.in_flight.values())
                if now >= t_start and now < t_end and not busy:
                    self.process(next_id, max(now, t_start))
                    next_id += 1
                    continue
                generating = now < t_end
                next_due = now + 0.02
            else:
                due = t_start + self.phase_s + next_id / fps
                if next_id < total and now >= due and not device_busy:
                    self.process(next_id, due)
                    next_id += 1
                    continue
                generating = next_id < total
                next_due = due if generating else now + 0.02
            pending = device_busy or any(not f.is_probe for f in self.in_flight.values())
            if not generating and not pending:
                break
            self.maybe_probe(now)
            wake = min(next_due, self.last_network_activity + self.probe_interval) if self.strategy.uses_network \
                else next_due
            deadlines = [f.deadline - SEND_MARGIN_S / 2 for f in self.in_flight.values() if not f.is_probe]
            if deadlines:
                wake = min(wake, min(deadlines))
            if self.held is not None:
                wake = min(wake, self.held.release_at)
            wait = wake - time.monotonic()
            if self.held is not None and wake == self.held.release_at and wait < POLL_SLACK_S:
                # The release is close: sleep to it exactly (the poll's whole-ms wait would overshoot).
                time.sleep(max(0.0, wait))
                continue
            if self.held is not None and wake == self.held.release_at:
                wait -= POLL_SLACK_S
            for result in self.client.poll(timeout=max(0.0, min(wait, MAX_POLL_S))):
                self.on_result(result)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testbed.runtime.device", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname).1s %(name)s: %(message)s")
    code = DeviceAgent(json.loads(Path(args.config).read_text())).run()
    # Records are closed and flushed; skip the interpreter's teardown (torch, zmq), which costs
    # seconds of CPU under a small CPU share.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    raise SystemExit(main())
