"""Split-able early-exit models: head/tail equivalence, exits, sparsity, registry, AppealNet pieces."""

from __future__ import annotations

import pytest
import torch

from testbed.models.analysis import block_costs, sparsity_report, split_bytes, tensor_bytes
from testbed.models.appeal import appeal_loss, appeal_tradeoff
from testbed.models.registry import FAMILY, MODELS, build_model, list_models

SPLITTABLE = [name for name in MODELS if name != "appealnet-edge"] + FAMILY


@pytest.mark.parametrize("name", SPLITTABLE)
def test_head_then_tail_equals_full_model_at_every_split(name):
    torch.manual_seed(0)
    model = build_model(name).eval()
    x = torch.randn(3, 1, 16, 16)
    with torch.no_grad():
        full = model(x)
        all_exits = model.forward_all_exits(x)
        for split in model.split_points:
            features, device_exits = model.head(x, upto=split)
            final, cloud_exits = model.tail(features, start=split, return_exits=True)
            assert torch.allclose(final, full, atol=1e-5), split
            assert torch.allclose(model.tail(features, start=model.split_index(split)), full, atol=1e-5)
            # Every exit runs exactly once across the two halves (the last split repeats only the final).
            indices = [i for i, _ in device_exits] + [i for i, _ in cloud_exits]
            if split == model.split_points[-1]:
                indices = indices[:-1]
            assert indices == list(range(model.num_exits)), split
            for index, logits in device_exits:
                assert torch.allclose(logits, all_exits[index], atol=1e-5)
    assert torch.allclose(all_exits[-1], full, atol=1e-6)


@pytest.mark.parametrize("name,size,channels", [("resnet20-ee", 32, 3), ("mobilenetv2-ee", 32, 3),
                                                ("resnet20-ee-sparse", 24, 1)])
def test_resolution_channels_and_width_are_configurable(name, size, channels):
    model = build_model(name, input_size=size, in_channels=channels, num_classes=7, width=1.0).eval()
    x = torch.randn(2, channels, size, size)
    with torch.no_grad():
        assert model(x).shape == (2, 7)
        split = model.split_points[len(model.split_points) // 2]
        features, _ = model.head(x, upto=split)
        assert torch.allclose(model.tail(features, start=split), model(x), atol=1e-5)


def test_split_points_and_exits_describe_the_structure():
    model = build_model("resnet20-ee")
    assert model.split_points[0] == "input" and model.split_points[1] == "stem"
    assert model.split_points[-1] == "s3b2" and len(model.split_points) == 11
    assert [e.after for e in model.exits] == ["s1b0", "s2b0", "s3b0", "s3b2"]
    assert [e.index for e in model.exits] == [0, 1, 2, 3]
    features, exits = model.head(torch.randn(1, 1, 16, 16), upto="input")
    assert exits == [] and features.shape == (1, 1, 16, 16)
    with pytest.raises(KeyError, match="unknown split point"):
        model.head(torch.randn(1, 1, 16, 16), upto="s9b9")
    with pytest.raises(KeyError, match="unknown model"):
        build_model("resnet1000")


@pytest.mark.parametrize("name", ["resnet20-ee", "mobilenetv2-ee", "resnet20-ee-sparse"])
def test_every_exit_head_receives_gradient(name):
    model = build_model(name).train()
    outputs = model.forward_all_exits(torch.randn(4, 1, 16, 16))
    assert len(outputs) == model.num_exits >= 3
    sum(o.sum() for o in outputs).backward()
    for head in model.exit_heads:
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())


def test_predefined_sparse_variant_really_cuts_params_and_flops():
    report = sparsity_report(build_model("resnet20-ee-sparse"), build_model("resnet20-ee"), (1, 16, 16))
    assert 0.24 <= report["conv_weight_density"] <= 0.27  # groups=4: 1/4 of every grouped conv
    assert report["params_reduction"] > 2.5 and report["flops_reduction"] > 2.5
    sparse = build_model("resnet20-ee-sparse")
    grouped = [m for m in sparse.blocks.modules() if isinstance(m, torch.nn.Conv2d) and m.groups == 4]
    assert len(grouped) >= 18  # every 3x3 conv of every residual block


def test_block_costs_are_consistent():
    model = build_model("resnet20-ee")
    costs = block_costs(model, (1, 16, 16))
    assert costs["params_total"] == sum(p.numel() for p in model.parameters())
    splits = {s["name"]: s for s in costs["splits"]}
    assert splits["input"]["device_flops"] == 0
    assert splits["input"]["cloud_flops"] == costs["flops_backbone_and_final_exit"]
    device = [s["device_flops"] for s in costs["splits"]]
    cloud = [s["cloud_flops"] for s in costs["splits"]]
    assert device == sorted(device) and cloud == sorted(cloud, reverse=True)
    # First conv (1->8 channels, 3x3, 16x16 output) counted analytically: 2 * 8*16*16 * 9.
    assert costs["blocks"][0]["flops"] == 2 * 8 * 16 * 16 * 9


def test_split_bytes_encodings_are_ordered():
    model = build_model("resnet20-ee").eval()
    rows = split_bytes(model, torch.randn(5, 1, 16, 16))
    assert [r["name"] for r in rows] == model.split_points
    for row in rows:
        assert row["float32"] == 2 * row["float16"] > row["int8"]
    zeros = tensor_bytes(torch.zeros(1, 8, 16, 16))
    assert zeros["int8_zstd"] < 50 < zeros["int8"]  # an all-zero activation compresses to almost nothing


def test_appealnet_edge_has_class_and_appeal_heads():
    edge = build_model("appealnet-edge").eval()
    cloud = build_model("appealnet-cloud")
    logits, q = edge.forward_with_appeal(torch.randn(6, 1, 16, 16))
    assert logits.shape == (6, 10) and q.shape == (6,)
    assert bool(((q >= 0) & (q <= 1)).all())
    edge_params = sum(p.numel() for p in edge.parameters())
    assert sum(p.numel() for p in cloud.parameters()) > 10 * edge_params


def test_appeal_loss_pushes_q_towards_the_cheaper_side():
    labels = torch.tensor([0, 0])
    logits = torch.tensor([[5.0, 0.0], [0.0, 5.0]])  # edge right on the first, wrong on the second
    q = torch.tensor([0.5, 0.5], requires_grad=True)
    cloud_loss = torch.tensor([0.01, 0.01])  # the cloud gets both right
    appeal_loss(logits, q, labels, cloud_loss, appeal_cost=0.3).backward()
    assert q.grad[0] < 0 < q.grad[1]  # keep the easy one local (raise q), appeal the hard one


def test_appeal_tradeoff_endpoints():
    labels = torch.tensor([0, 1, 0, 1])
    edge = torch.tensor([[2.0, 0], [2.0, 0], [2.0, 0], [0, 2.0]])  # 3/4 right
    cloud = torch.tensor([[2.0, 0], [0, 2.0], [2.0, 0], [0, 2.0]])  # all right
    q = torch.tensor([0.9, 0.1, 0.8, 0.7])
    rows = {r["appeal_rate"]: r for r in appeal_tradeoff(edge, q, cloud, labels, appeal_rates=(0.0, 0.25, 1.0))}
    assert rows[0.0]["q_gate_accuracy"] == 0.75 and rows[1.0]["q_gate_accuracy"] == 1.0
    assert rows[0.25]["q_gate_accuracy"] == 1.0  # q ranks the one mistake lowest


def test_registry_lists_every_kind():
    names = list_models()
    for required in ("resnet20-ee", "mobilenetv2-ee", "resnet20-ee-sparse", "appealnet-edge", "appealnet-cloud"):
        assert required in names
    assert 4 <= len(FAMILY) <= 8
