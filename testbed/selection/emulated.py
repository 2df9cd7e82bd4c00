"""Device-aware selection under the emulated network (issue 11, item 4): profiles and run summaries.

* :func:`candidate_profiles` -- the ``ModelProfile`` of each shipped NAS-Bench-201 candidate as a paced
  device agent builds it (``testbed.runtime.device.DeviceAgent.apply_hardware``: the device profile's
  per-split head times, the server profile's tails, the card's split bytes and exit accuracies), without
  the validation pass -- what the ``device-aware`` strategy plans with, for offline checks and tests.
* :func:`summarise_run` -- per device profile and strategy of a ``testbed run`` folder: deadline hit
  rate, accuracy, and the (network, split) choices: the network from each record's ``model``, the
  strategy's reasons (split, predicted time, feasible) from its ``device-aware choice:`` log lines. "Expected timely
  accuracy" scores each request answered in time with its network's card test accuracy (10,000 test
  images) instead of its one image: the accuracy effect of the choices without the sampling noise of a
  few dozen requests.

    python -m testbed.selection.emulated results/device-aware/<run-id>     # markdown table
"""

from __future__ import annotations

import collections
import json
import re
import sys
from pathlib import Path

from testbed.strategies.base import ModelProfile
from testbed.strategies.device_aware import CHOICE_PREFIX, DEFAULT_CANDIDATES

CANDIDATE_DATA = {"name": "fashion-mnist", "size": 32}  # what the shipped candidates were trained on
_CHOICE = re.compile(re.escape(CHOICE_PREFIX) + r" t=(?P<t>\S+) model=(?P<model>\S+) split=(?P<split>\S+) "
                     r"local=(?P<local>[01]) predicted_ms=(?P<ms>\S+) feasible=(?P<feasible>[01]) connected=(?P<connected>[01])")


def candidate_card(name: str) -> dict:
    """The model card of a shipped candidate (FileNotFoundError if it is not shipped)."""
    from testbed.models.train import SHIPPED_DIR, DataConfig, TrainConfig, checkpoint_dir, read_card

    directory = checkpoint_dir(name, DataConfig(**CANDIDATE_DATA), TrainConfig(), None, SHIPPED_DIR)
    if not (directory / "card.json").is_file():
        raise FileNotFoundError(f"{directory}: not shipped; build with "
                                "`nice -n 10 .venv/bin/python testbed/models/shipped/build.py nb201`")
    return read_card(directory)


def candidate_profiles(target: str, server: str = "gtx1080ti",
                       candidates: list[str] | None = None) -> dict[str, ModelProfile]:
    """Profiles of the candidates on a paced ``target`` offloading to a paced ``server``."""
    from testbed.devices import get_profile
    from testbed.models.registry import build_model

    device, cloud = get_profile(target), get_profile(server)
    out = {}
    for name in candidates or DEFAULT_CANDIDATES:
        card = candidate_card(name)
        model = build_model(card["model"], **card["model_kwargs"]).eval()  # costs depend on the shape only
        shape = tuple(card["dataset"]["input_shape"])
        costs, tail = device.model_costs(model, shape), cloud.model_costs(model, shape)["tail_ms"]
        splits = list(card["split_points"])
        out[name] = ModelProfile(
            name=name, split_points=splits, device_ms={s: float(costs["head_ms"][s]) for s in splits},
            cloud_ms={s: float(tail[s]) for s in splits},
            split_bytes={s["name"]: s.get("bytes", {}) for s in card["splits"]},
            exit_after=[e["after"] for e in card["exits"]], exit_accuracy=[e["test_accuracy"] for e in card["exits"]],
            exit_head_ms=[float(ms) for ms in costs["exit_ms"]],
            extra={"hardware": target, "device_ms_measured": costs["full_ms"], "proxy_ms": costs["full_ms"]})
    return out


def read_choices(log_path: str | Path) -> list[dict]:
    """The strategy's per-request choices from a device log, in order."""
    out = []
    path = Path(log_path)
    if not path.is_file():
        return out
    for line in path.read_text(errors="replace").splitlines():
        m = _CHOICE.search(line)
        if m:
            out.append({"t": None if m["t"] == "-" else float(m["t"]), "model": m["model"], "split": m["split"],
                        "local": m["local"] == "1",
                        "predicted_ms": float(m["ms"]), "feasible": m["feasible"] == "1",
                        "connected": m["connected"] == "1"})
    return out


def summarise_run(run_dir: str | Path) -> list[dict]:
    """Per (device profile, strategy label), over repeats: hit rate, accuracy and the choices made."""
    from testbed.analysis.metrics import on_time, outage_windows, read_records, read_replay, session_metrics

    run_dir = Path(run_dir)
    groups: dict[tuple[str, str], dict] = {}
    for done in sorted(run_dir.glob("cells/*/*/r*/done.json")):
        unit = done.parent
        info = json.loads((unit / "unit.json").read_text()) if (unit / "unit.json").is_file() else {}
        settings = info.get("settings", {})
        replay = read_replay(unit / "replay.csv")
        label = unit.parent.name
        for session in sorted(unit.glob("session-*.json")):
            cfg = json.loads(session.read_text())
            device = cfg["device"]
            records = [r for r in read_records(unit / f"records-{device}.jsonl")] \
                if (unit / f"records-{device}.jsonl").is_file() else []
            if not records:
                continue
            metrics = session_metrics(records, replay, {**settings, "deadline_s": cfg["deadline_s"]})
            choices = read_choices(unit / f"device-{device}.log")
            by_t = {round(c["t"], 3): c for c in choices if c["t"] is not None}
            card_accuracy = _card_accuracies(cfg.get("models") or {})
            windows = outage_windows(replay, end=max(r["t_finish"] or 0 for r in records) + 1)
            key = (cfg.get("device_profile") or f"cpu:{device}", label)
            g = groups.setdefault(key, {"device_profile": key[0], "strategy": label, "sessions": 0, "requests": 0,
                                        "on_time": 0, "correct": 0, "answered": 0, "timely_correct": 0,
                                        "choices": collections.Counter(), "outage_choices": collections.Counter(),
                                        "infeasible": 0, "expected_timely": 0.0})
            g["sessions"] += 1
            n = len(records)
            g["requests"] += n
            g["on_time"] += round((1 - metrics["deadline_miss_rate"]) * n)
            g["timely_correct"] += round(metrics["timely_accuracy"] * n)
            g["answered"] += round(metrics["availability"] * n)
            g["correct"] += sum(bool(r.get("correct")) for r in records)
            for r in records:  # the chosen network's card accuracy (10,000 test images) when answered in time
                choice = by_t.get(round(r["t_arrival"], 3))
                model = r.get("model") or (choice or {}).get("model")  # records before 'model' existed: the log
                if model and on_time(r, cfg["deadline_s"]) and r["outcome"] != "fallback_exit":
                    g["expected_timely"] += card_accuracy.get(model, float("nan"))
            for c in choices:
                where = "local" if c["local"] else c["split"]
                g["choices"][f"{c['model']}@{where}"] += 1
                if c["t"] is not None and any(a <= c["t"] < b for a, b in windows):
                    g["outage_choices"][f"{c['model']}@{where}"] += 1
                g["infeasible"] += not c["feasible"]
    rows = []
    for g in groups.values():
        n = g["requests"]
        rows.append({**g, "hit_rate": g["on_time"] / n, "timely_accuracy": g["timely_correct"] / n,
                     "expected_timely_accuracy": g["expected_timely"] / n,
                     "accuracy": g["correct"] / g["answered"] if g["answered"] else float("nan")})
    rows.sort(key=lambda r: (r["device_profile"], r["strategy"]))
    return rows


def _card_accuracies(models: dict[str, str]) -> dict[str, float]:
    """Final-exit test accuracy from each checkpoint's card (the session config's model -> directory)."""
    from testbed.models.train import CheckpointError, read_card

    out = {}
    for name, directory in models.items():
        try:
            out[name] = float(read_card(directory)["exits"][-1]["test_accuracy"])
        except (CheckpointError, KeyError, IndexError):
            continue
    return out


def _top(counter: collections.Counter, total: int) -> str:
    if not total:
        return "-"
    return ", ".join(f"{k} {v / total:.0%}" for k, v in counter.most_common(3))


def markdown_table(rows: list[dict]) -> str:
    lines = ["| device | strategy | requests | hit rate | accuracy (answered) | timely accuracy | "
             "expected timely accuracy | chosen network@split (share of requests) | during the outage |",
             "|---|---|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        total = sum(r["choices"].values())
        lines.append(f"| {r['device_profile']} | {r['strategy']} | {r['requests']} | {r['hit_rate']:.2f} | "
                     f"{r['accuracy']:.3f} | {r['timely_accuracy']:.3f} | {r['expected_timely_accuracy']:.3f} | "
                     f"{_top(r['choices'], total)} | "
                     f"{_top(r['outage_choices'], sum(r['outage_choices'].values()))} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[-1].strip())
        return 2
    print(markdown_table(summarise_run(argv[0])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
