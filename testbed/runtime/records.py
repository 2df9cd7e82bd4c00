"""The per-request record: exactly these keys, one JSON object per line (analysis depends on them)."""

from __future__ import annotations

RECORD_KEYS = (
    "request_id", "device", "strategy", "model", "t_arrival", "t_finish", "deadline_s", "latency_s", "outcome",
    "exit_index", "split", "codec", "bytes_up", "bytes_down", "device_compute_s", "encode_s", "decode_s",
    "transfer_s", "cloud_queue_s", "cloud_compute_s", "prediction", "label", "correct", "est_bw_mbps",
    "est_rtt_ms", "energy_j", "pace_late", "pace_late_ms",
)
# model: the network the plan ran (a strategy may choose one per request, e.g. device-aware); None when
# the request timed out before any plan.
# pace_late / pace_late_ms (paced devices, testbed.devices profiles; None in CPU-share mode): how long
# after the profiled finish the device part was really released (its latency includes it), and
# whether that was more than PACE_LATE_MS (the host could not keep pace with the profile).
PACE_LATE_MS = 1.0
OUTCOMES = ("device_exit", "cloud", "fallback_exit", "timeout", "failed")


def new_record(**values) -> dict:
    record = dict.fromkeys(RECORD_KEYS)
    unknown = set(values) - set(RECORD_KEYS)
    if unknown:
        raise KeyError(f"not record keys: {sorted(unknown)}")
    record.update(values)
    return record


def validate_record(record: dict) -> list[str]:
    """Problems with one record (empty when valid)."""
    problems = []
    if tuple(record) != RECORD_KEYS and set(record) != set(RECORD_KEYS):
        problems.append(f"keys differ: missing {sorted(set(RECORD_KEYS) - set(record))}, "
                        f"extra {sorted(set(record) - set(RECORD_KEYS))}")
        return problems
    if record["outcome"] not in OUTCOMES:
        problems.append(f"outcome {record['outcome']!r} not in {OUTCOMES}")
    for key in ("t_arrival", "t_finish", "latency_s", "deadline_s", "energy_j"):
        if not isinstance(record[key], (int, float)):
            problems.append(f"{key} must be a number, got {record[key]!r}")
    if not problems and abs(record["t_finish"] - record["t_arrival"] - record["latency_s"]) > 1e-6:
        problems.append("latency_s != t_finish - t_arrival")
    answered = record["outcome"] in ("device_exit", "cloud", "fallback_exit")
    if answered and (record["prediction"] is None or record["correct"] is None):
        problems.append("answered request without prediction/correct")
    if not answered and record["prediction"] is not None:
        problems.append("unanswered request with a prediction")
    return problems
