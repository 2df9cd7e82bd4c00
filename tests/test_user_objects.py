"""Your own model, strategy and dataset by reference: what works, and one-line errors for what does not."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from testbed.data import load_dataset
from testbed.errors import ConfigError
from testbed.models import build_model
from testbed.strategies import Estimates, get_strategy, list_strategies
from testbed.user_code import UserCodeError

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
TINY_EE = f"{EXAMPLES}/custom_model/tiny_ee.py:build"
SHAPES = f"{EXAMPLES}/custom_dataset/shapes_data.py:load"
SMALL_CNN = f"{EXAMPLES}/custom_dataset/small_cnn.py:build"
DIGITS_KWARGS = {"num_classes": 10, "in_channels": 1, "input_size": 16}

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _restore_import_paths(monkeypatch):
    """Loading references puts folders on sys.path and PYTHONPATH: keep them out of other tests."""
    from testbed import user_code

    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    monkeypatch.setattr(user_code, "_SEARCH_PATHS", list(user_code._SEARCH_PATHS))


def write(tmp_path: Path, name: str, source: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return path


def one_line_error(excinfo, *fragments: str) -> str:
    message = str(excinfo.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


# --- loading references ------------------------------------------------------------------------


def test_missing_module_names_the_reference(tmp_path):
    with pytest.raises(UserCodeError) as excinfo:
        build_model("no_such_pkg_xyz.nets:build", **DIGITS_KWARGS)
    one_line_error(excinfo, "no_such_pkg_xyz.nets:build", "no module named 'no_such_pkg_xyz.nets'")


def test_failing_import_inside_the_users_module_is_reported_as_such(tmp_path):
    path = write(tmp_path, "broken.py", "import a_dependency_that_is_not_installed\n")
    with pytest.raises(UserCodeError) as excinfo:
        build_model(f"{path}:build", **DIGITS_KWARGS)
    one_line_error(excinfo, f"{path}:build", "ModuleNotFoundError", "a_dependency_that_is_not_installed")


def test_missing_file_and_missing_attribute(tmp_path):
    with pytest.raises(UserCodeError) as excinfo:
        build_model("no/such/file.py:build", **DIGITS_KWARGS)
    one_line_error(excinfo, "no/such/file.py:build", "not found")
    path = write(tmp_path, "nets.py", "def make():\n    pass\n")
    with pytest.raises(UserCodeError) as excinfo:
        build_model(f"{path}:build", **DIGITS_KWARGS)
    one_line_error(excinfo, "has no attribute 'build'", "make")


# --- models -------------------------------------------------------------------------------------


def test_builder_must_return_a_module(tmp_path):
    path = write(tmp_path, "nets.py", "def build():\n    return {'not': 'a module'}\n")
    with pytest.raises(UserCodeError) as excinfo:
        build_model(f"{path}:build", **DIGITS_KWARGS)
    one_line_error(excinfo, f"{path}:build", "returned a dict", "nn.Module")


def test_module_without_the_protocol_names_the_missing_attribute(tmp_path):
    path = write(tmp_path, "nets.py", """
        from torch import nn
        def build(num_classes):
            return nn.Linear(256, num_classes)
    """)
    with pytest.raises(UserCodeError) as excinfo:
        build_model(f"{path}:build", **DIGITS_KWARGS)
    one_line_error(excinfo, "Linear lacks block_names", "SplittableNet", "nn.Sequential")


def test_wrong_return_type_of_a_protocol_method(tmp_path):
    path = write(tmp_path, "nets.py", f"""
        import importlib.util
        spec = importlib.util.spec_from_file_location("tiny_ee_copy", {TINY_EE.rsplit(':', 1)[0]!r})
        tiny = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(tiny)

        class BadTail(tiny.TinyEarlyExit):
            def tail(self, features, start, return_exits=False):
                return {{"logits": super().tail(features, start)}}

        def build(num_classes, in_channels):
            return BadTail(num_classes, in_channels)
    """)
    with pytest.raises(UserCodeError) as excinfo:
        build_model(f"{path}:build", **DIGITS_KWARGS)
    one_line_error(excinfo, "BadTail.tail(features, start='input') returned a dict", "expected logits of shape (1, 10)")


def test_logits_of_the_wrong_width(tmp_path):
    path = write(tmp_path, "nets.py", """
        from torch import nn
        def build(in_channels):
            return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * 16 * 16, 3))
    """)
    with pytest.raises(UserCodeError) as excinfo:
        build_model(f"{path}:build", **DIGITS_KWARGS)
    one_line_error(excinfo, "returned a tensor of shape (1, 3)", "(1, 10)")


def test_plain_sequential_is_split_between_children_with_one_exit():
    model = build_model(SMALL_CNN, **DIGITS_KWARGS)
    assert model.split_points == ["input", *(f"layer{i}" for i in range(10))]
    assert model.num_exits == 1 and model.exits[0].after == "layer9"
    x = torch.randn(2, 1, 16, 16)
    model.eval()
    with torch.no_grad():
        full = model(x)
        for split in model.split_points:  # every split gives the same answer as the whole network
            features, _ = model.head(x, upto=split)
            assert torch.allclose(model.tail(features, start=split), full, atol=1e-5)


def test_checkpoint_rebuilds_from_the_reference_and_code_changes_change_the_cache_key(tmp_path):
    from testbed.models.train import DataConfig, TrainConfig, checkpoint_dir, load_checkpoint, train_and_card

    source = (EXAMPLES / "custom_dataset/small_cnn.py").read_text()
    path = write(tmp_path, "cnn.py", source)
    ref = f"{path}:build"
    data, train = DataConfig(name=SHAPES), TrainConfig(epochs=1, threads=1)
    model, card = train_and_card(ref, data, train, out_dir=tmp_path / "ckpt")
    assert card["model"] == ref and card["model_kwargs"] == {"num_classes": 3, "in_channels": 1, "input_size": 16}
    assert card["user_code"] == {ref: {"sha256": hashlib.sha256(source.encode()).hexdigest()},
                                 SHAPES: {"sha256": hashlib.sha256(Path(SHAPES[:-5]).read_bytes()).hexdigest()}}
    rebuilt, _ = load_checkpoint(tmp_path / "ckpt")
    x = torch.from_numpy(load_dataset(SHAPES).test.x[:4])
    model.eval()
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))
    before = checkpoint_dir(ref, data, train, card["model_kwargs"], tmp_path)
    assert "/" not in before.name and ":" not in before.name
    sys.modules.pop(next(n for n, m in sys.modules.items() if getattr(m, "__file__", None) == str(path)))
    from testbed import user_code

    user_code._MODULE_OF.pop(ref)
    path.write_text(source.replace("nn.MaxPool2d(2)", "nn.AvgPool2d(2)"))  # the user edits the model
    assert checkpoint_dir(ref, data, train, card["model_kwargs"], tmp_path) != before


# --- strategies ---------------------------------------------------------------------------------


def test_every_built_in_strategy_plans_on_a_user_model(tmp_path):
    from testbed.models.train import DataConfig, TrainConfig, train_and_card
    from testbed.runtime.execution import build_profile
    from testbed.strategies import Context

    dataset = load_dataset("digits", limit=200)
    model, card = train_and_card(TINY_EE, DataConfig(limit=200), TrainConfig(epochs=1, threads=1), dataset=dataset)
    profile = build_profile(TINY_EE, model, card, dataset.val.x, dataset.val.y, measured_full_ms=2.0)
    context = Context(model=TINY_EE, deadline_s=0.5)
    planned = []
    for name in list_strategies():
        strategy = get_strategy(name)
        if {m for models in strategy.models(TINY_EE).values() for m in models} != {TINY_EE}:
            continue  # needs other models (AppealNet pair, a family of variants)
        for estimates in (Estimates(), Estimates(connected=False), Estimates(bw_up_mbps=0.1)):
            plan = strategy.plan(estimates, {TINY_EE: profile}, context)
            assert plan.split in profile.split_points, (name, plan)
        planned.append(name)
    assert {"device-only", "cloud-only", "neurosurgeon", "edgent", "spinn"} <= set(planned)


def test_user_strategy_loads_validates_params_and_plans():
    ref = f"{EXAMPLES}/custom_strategy/threshold_policy.py:ConfidenceGate"
    strategy = get_strategy(ref, {"threshold": 0.7})
    assert strategy.name == "confidence-gate" and strategy.p == {"threshold": 0.7, "codec": "float16"}
    with pytest.raises(ConfigError) as excinfo:
        get_strategy(ref, {"threshold": 1.5})
    one_line_error(excinfo, "strategy_params.threshold", "<= 1", "1.5")
    with pytest.raises(ConfigError) as excinfo:
        get_strategy(ref, {"treshold": 0.5})
    one_line_error(excinfo, "strategy_params.treshold", "allowed: codec, threshold")


@pytest.mark.parametrize("source, fragment", [
    ("class Policy:\n    pass\n", "is a Policy; expected a subclass of testbed.Strategy"),
    ("Policy = 3\n", "is a int; expected a subclass of testbed.Strategy"),
    ("from testbed import Strategy\nclass Policy(Strategy):\n    pass\n", "Policy lacks plan(estimates"),
    ("from testbed import Strategy, Plan\nclass Policy(Strategy):\n    params = {'k': 1}\n"
     "    def plan(self, e, p, c):\n        return Plan('input')\n", "Policy.params must be a dict of name -> testbed.Param"),
])
def test_wrong_strategy_classes(tmp_path, source, fragment):
    path = write(tmp_path, "policy.py", source)
    with pytest.raises(UserCodeError) as excinfo:
        get_strategy(f"{path}:Policy")
    one_line_error(excinfo, f"{path}:Policy", fragment)


@pytest.mark.parametrize("returned, fragment", [
    ("{'split': 'input'}", "plan() returned a dict; expected a testbed.Plan"),
    ("Plan('layer99')", "plan() chose split 'layer99'"),
])
def test_wrong_plan_fails_on_the_first_request_by_name(tmp_path, returned, fragment):
    from testbed.strategies import Context, ModelProfile

    path = write(tmp_path, "policy.py", f"""
        from testbed import Plan, Strategy
        class Policy(Strategy):
            def plan(self, estimates, profiles, context):
                return {returned}
    """)
    strategy = get_strategy(f"{path}:Policy")
    assert strategy.name == "Policy"
    profile = ModelProfile("m", ["input", "a"], {"input": 0, "a": 1}, {"input": 1, "a": 0}, {})
    with pytest.raises(UserCodeError) as excinfo:
        strategy.plan(Estimates(), {"m": profile}, Context(model="m", deadline_s=0.5))
    one_line_error(excinfo, f"{path}:Policy", fragment)


# --- datasets -----------------------------------------------------------------------------------


def test_user_dataset_loads_with_the_options_it_declares():
    dataset = load_dataset(SHAPES, size=12, channels=3, seed=1)
    assert dataset.input_shape == (3, 12, 12) and dataset.num_classes == 3
    assert dataset.class_names == ["bar", "cross", "box"] and len(dataset.train) == 900
    assert dataset.train.x.dtype == np.float32 and dataset.test.y.dtype == np.int64
    assert dataset.describe()["sha256"] == load_dataset(SHAPES, size=12, channels=3, seed=1).describe()["sha256"]


@pytest.mark.parametrize("body, fragment", [
    ("return [1, 2, 3]", "returned list; expected a mapping with train, val and test"),
    ("return {'train': ok, 'val': ok}", "returned dict; expected a mapping with train, val and test"),
    ("return {'train': ok, 'val': ok, 'test': (ok[0].astype('uint8'), ok[1])}",
     "test x has shape (4, 1, 8, 8) and dtype uint8; expected float32 (N, C, H, W)"),
    ("return {'train': ok, 'val': (ok[0], ok[1][:3]), 'test': ok}", "val y has shape (3,)"),
    ("return {'train': ok, 'val': ok, 'test': ok, 'num_classes': 2}", "labels must lie in 0..1, got up to 3"),
    ("return {'train': ok, 'val': ok, 'test': (ok[0][:, :, :4], ok[1])}", "images differ in shape"),
    ("raise OSError('no such directory: /data/mine')", "raised OSError: no such directory: /data/mine"),
])
def test_wrong_dataset_returns(tmp_path, body, fragment):
    path = write(tmp_path, "data.py", f"""
        import numpy as np
        def load():
            ok = (np.zeros((4, 1, 8, 8), dtype=np.float32), np.array([0, 1, 2, 3]))
            {body}
    """)
    with pytest.raises(UserCodeError) as excinfo:
        load_dataset(f"{path}:load")
    one_line_error(excinfo, f"{path}:load", fragment)


# --- experiments and the public API -------------------------------------------------------------


def test_experiment_errors_name_the_file_the_key_and_the_reference(tmp_path):
    from testbed.experiment.schema import parse_experiment

    base = {"name": "x", "topology": str(REPO / "topologies/device-cloud.yaml"),
            "strategies": ["device-only"], "workload": {"fps": 5, "duration_s": 5, "deadline_s": 0.5}}
    with pytest.raises(ConfigError) as excinfo:
        parse_experiment({**base, "model": "nowhere_pkg:build"}, "exp.yaml", base=tmp_path)
    one_line_error(excinfo, "exp.yaml: model", "nowhere_pkg:build", "no module named 'nowhere_pkg'")
    with pytest.raises(ConfigError) as excinfo:
        parse_experiment({**base, "data": "loader.py:load"}, "exp.yaml", base=tmp_path)
    one_line_error(excinfo, "exp.yaml: data", "loader.py:load", "not found")
    write(tmp_path, "exp_gate_policy.py", "class Gate:\n    pass\n")
    with pytest.raises(ConfigError) as excinfo:
        parse_experiment({**base, "strategies": ["exp_gate_policy:Gate"]}, "exp.yaml", base=tmp_path)
    one_line_error(excinfo, "exp.yaml: strategies[0].name", "exp_gate_policy:Gate", "expected a subclass of testbed.Strategy")


def test_examples_parse_and_label_user_strategies_by_their_name():
    from testbed.experiment.schema import load_experiment

    exp = load_experiment(EXAMPLES / "custom_strategy/experiment.yaml")
    assert [(s.name, s.label) for s in exp.strategies] == [("threshold_policy:ConfidenceGate", "confidence-gate")]
    for folder in ("custom_model", "custom_dataset"):
        assert load_experiment(EXAMPLES / folder / "experiment.yaml").strategies


def test_public_api_is_lazy_and_complete():
    code = ("import sys, testbed\nassert 'torch' not in sys.modules\n"
            "from testbed import Strategy, Param, Plan, Estimates, ModelProfile, Context, UserCodeError\n"
            "assert 'torch' not in sys.modules\n"
            "from testbed import SplittableNet, exit_head, check_model, SequentialNet, Dataset, Split\n"
            "print(sorted(testbed.__all__) == sorted(set(testbed.__all__)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "True", out.stderr


def test_the_python_examples_in_docs_extending_run():
    import re

    from testbed import Strategy, check_model
    from testbed.strategies import Context, ModelProfile

    blocks = re.findall(r"```python\n(.*?)```", (REPO / "docs/extending.md").read_text(), flags=re.S)
    assert len(blocks) == 2
    for block in blocks:
        namespace: dict = {}
        exec(textwrap.dedent(block), namespace)  # noqa: S102 - the documentation's own examples
        if "build" in namespace:
            check_model(namespace["build"](10, 1), "docs/extending.md", (1, 16, 16), num_classes=10)
        for value in list(namespace.values()):
            if isinstance(value, type) and issubclass(value, Strategy) and value is not Strategy:
                profile = ModelProfile("m", ["input", "a", "b"], {"input": 0, "a": 1, "b": 2},
                                       {"input": 2, "a": 1, "b": 0}, {}, exit_after=["a", "b"])
                plan = value({"threshold": 0.7}).plan(Estimates(), {"m": profile}, Context(model="m", deadline_s=0.5))
                assert plan.split == "a" and plan.exit_threshold == 0.7
