"""Experiments: validated YAML files, a resumable runner over cells x strategies x repeats, manifests.

    from testbed.experiment import load_experiment, run_experiment
    exp = load_experiment("experiments/quickstart.yaml")     # ConfigError names file + key path
    run_dir = run_experiment("experiments/quickstart.yaml", out="results")
"""

from testbed.experiment.manifest import read_manifest
from testbed.experiment.runner import open_run, run_experiment, unit_dir
from testbed.experiment.schema import Cell, Experiment, StrategySpec, load_experiment, parse_experiment

__all__ = ["Cell", "Experiment", "StrategySpec", "load_experiment", "open_run", "parse_experiment",
           "read_manifest", "run_experiment", "unit_dir"]
