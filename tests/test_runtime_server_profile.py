"""The cloud server emulating a server profile: a virtual FIFO queue of M workers, real answers.

Unit tests check the queue arithmetic and the tail costs the server charges. The emulated test
runs six devices that offload every frame at the same instants (open loop, one shared start),
so their requests reach the server together: with one profiled worker they queue behind each
other (up to 0..5 service times), with six workers none waits.
"""

from __future__ import annotations

import json

import pytest

from testbed.runtime.cloud import VirtualQueue, load_server_profile, tail_cost_ms

SERVER = "gtx1080ti"
# The shipped digits model (nothing to train): 2.6 ms per request on the gtx1080ti profile
MODEL = "resnet20-ee"
DEVICES = 6


def test_virtual_queue_is_fifo_over_its_workers():
    one = VirtualQueue(1)
    assert [one.admit(10.0, 2.0) for _ in range(3)] == [(10.0, 12.0), (12.0, 14.0), (14.0, 16.0)]
    assert one.admit(20.0, 2.0) == (20.0, 22.0)  # idle by then: no wait
    two = VirtualQueue(2)
    assert [two.admit(0.0, 1.0) for _ in range(3)] == [(0.0, 1.0), (0.0, 1.0), (1.0, 2.0)]


def test_virtual_queue_skips_requests_that_expire_waiting():
    queue = VirtualQueue(1)
    assert queue.admit(0.0, 5.0, deadline=1.0) == (0.0, 5.0)
    assert queue.admit(0.1, 5.0, deadline=4.0) is None  # would start at 5.0: expires in the queue
    assert queue.admit(0.2, 1.0, deadline=6.0) == (5.0, 6.0)  # the expired one took no worker time


@pytest.mark.parametrize("workers", [0, -1, 1.5, True])
def test_bad_worker_counts_are_refused(workers):
    with pytest.raises(ValueError, match="workers"):
        VirtualQueue(workers)


def test_server_profile_errors_are_clear():
    from testbed.errors import ConfigError

    with pytest.raises(ConfigError, match="server_profile"):
        load_server_profile(None, 4)
    with pytest.raises(ConfigError, match="device profile; the cloud needs a server"):
        load_server_profile("raspberry_pi4")
    with pytest.raises(ConfigError, match="unknown profile"):
        load_server_profile("gtx9999")


def test_tail_costs_follow_the_profile():
    import torch

    from testbed.models import build_model

    torch.set_num_threads(1)
    model = build_model(MODEL, in_channels=1, num_classes=10, input_size=16)
    profile = load_server_profile(SERVER, 2)
    assert profile.workers == 2
    costs = profile.model_costs(model, (1, 16, 16))
    final = model.num_exits - 1
    for split in model.split_points:
        assert tail_cost_ms(costs, model, split, None) == pytest.approx(costs["tail_ms"][split])
        assert tail_cost_ms(costs, model, split, final) == pytest.approx(costs["tail_ms"][split])
    assert tail_cost_ms(costs, model, "input", None) > tail_cost_ms(costs, model, model.split_points[-1], None)
    # an earlier exit from the input: fewer blocks, its own (smaller) head
    assert 0 < tail_cost_ms(costs, model, "input", 0) < costs["tail_ms"]["input"]
    with pytest.raises(ValueError, match="split"):
        tail_cost_ms(costs, model, "nowhere", None)


def _fleet_topology(tmp_path, n: int) -> str:
    # Unshaped links: the four requests of a frame reach the server within a fraction of a ms.
    path = tmp_path / "fleet.yaml"
    path.write_text(f"""name: fleet{n}
hosts:
  device: {{role: device, count: {n}}}
  cloud: {{role: cloud, cpu: 1.0}}
switches: [ap]
links:
  radio: {{ends: [device, ap]}}
  cell: {{ends: [ap, cloud], bw_mbps: 1000}}
""")
    return str(path)


def _session(tmp_path, workers: int):
    from testbed.runtime import SessionConfig, run_session

    out = tmp_path / f"workers{workers}"
    cfg = SessionConfig(topology=_fleet_topology(tmp_path, DEVICES), model=MODEL, strategy="cloud-only", fps=4.0,
                        duration_s=4.0, deadline_s=1.0, out_dir=str(out), server_profile=SERVER,
                        server_workers=workers)
    result = run_session(cfg)
    records = [json.loads(line) for line in open(result.records_path)]
    stats = json.loads((out / "cloud_stats.json").read_text())
    return records, stats


@pytest.mark.root
@pytest.mark.slow
def test_server_queueing_when_devices_offload_at_once(tmp_path, clean_machine):
    queued, queued_stats = _session(tmp_path, workers=1)
    free, free_stats = _session(tmp_path, workers=DEVICES)
    for records, stats, workers in ((queued, queued_stats, 1), (free, free_stats, DEVICES)):
        served = [r for r in records if r["outcome"] == "cloud"]
        assert len(records) == DEVICES * 16 and len(served) >= 0.9 * len(records)
        assert stats["server_profile"] == SERVER and stats["profile_workers"] == workers
        # server cost in profiled compute-seconds, request by request (records carry the same values)
        assert stats["profiled_compute_s"] == pytest.approx(sum(r["cloud_compute_s"] for r in served), rel=0.05)
        assert stats["compute_s"] > 0 and stats["cpu_s"] > 0  # the host really computed every tail
        assert sum(r["correct"] for r in served) >= 0.9 * len(served)  # real answers (test accuracy 0.99)
    service_s = queued_stats["profiled_compute_s"] / queued_stats["requests"]

    def mean_queue(records):
        return sum(r["cloud_queue_s"] for r in records if r["outcome"] == "cloud") / len(records)

    # Perfectly simultaneous, six requests on one worker would wait 0..5 service times (mean 2.5);
    # the agents' wake-ups on a busy 2-core host spread them by a few ms.
    assert mean_queue(queued) >= 0.5 * service_s, (mean_queue(queued), service_s)
    assert max(r["cloud_queue_s"] for r in queued if r["outcome"] == "cloud") >= 2 * service_s
    # A worker per device: (almost) nobody waits.
    assert mean_queue(free) <= 0.1 * service_s, (mean_queue(free), service_s)
    # No reply leaves before the profiled server has finished it: the queue is in the devices' latency.
    for r in queued + free:
        if r["outcome"] == "cloud":
            assert r["latency_s"] >= r["cloud_queue_s"] + r["cloud_compute_s"], r
