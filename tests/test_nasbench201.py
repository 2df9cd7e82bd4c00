"""NAS-Bench-201 networks: arch string -> model -> forward, every operation, splits, clear errors."""

from __future__ import annotations

import pytest
import torch

from testbed.errors import ConfigError
from testbed.models.nasbench201 import OPERATIONS, ArchStringError, NASBench201Net, parse_arch
from testbed.models.registry import build_model

torch.set_num_threads(1)


def uniform_arch(op: str) -> str:
    return f"|{op}~0|+|{op}~0|{op}~1|+|{op}~0|{op}~1|{op}~2|"


@pytest.mark.parametrize("op", OPERATIONS)
def test_every_operation_builds_and_runs(op):
    torch.manual_seed(0)
    model = NASBench201Net(uniform_arch(op)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (2, 10)
    assert torch.isfinite(logits).all()
    convs = [m for m in model.blocks.modules() if isinstance(m, torch.nn.Conv2d)]
    cell_convs = [m for m in model.blocks[1].modules() if isinstance(m, torch.nn.Conv2d)]
    kernels = {m.kernel_size for m in cell_convs}
    pools = [m for m in model.blocks[1].modules() if isinstance(m, torch.nn.AvgPool2d)]
    if op == "nor_conv_3x3":
        assert kernels == {(3, 3)} and len(cell_convs) == 6
    elif op == "nor_conv_1x1":
        assert kernels == {(1, 1)}
    elif op == "avg_pool_3x3":
        assert len(pools) == 6 and not kernels
    else:
        assert not kernels and not pools
    assert convs  # stem and reduction blocks always convolve
    if op == "none":
        # every cell outputs zeros, so the classifier sees a constant: both images get the same logits
        assert torch.equal(logits[0], logits[1])
    else:
        assert (logits[0] - logits[1]).abs().max() > 0


def test_skip_connect_cell_is_the_sum_of_paths():
    # node1 = x, node2 = x + node1 = 2x, node3 = x + node1 + node2 = 4x
    model = NASBench201Net(uniform_arch("skip_connect"))
    x = torch.randn(1, 16, 8, 8)
    assert torch.allclose(model.blocks[1](x), 4 * x)


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 28, 28)])
def test_head_then_tail_equals_full_model_at_every_split(shape):
    torch.manual_seed(0)
    arch = "|nor_conv_3x3~0|+|skip_connect~0|avg_pool_3x3~1|+|nor_conv_1x1~0|none~1|nor_conv_3x3~2|"
    model = NASBench201Net(arch, in_channels=shape[0], input_size=shape[1]).eval()
    x = torch.randn(2, *shape)
    with torch.no_grad():
        full = model(x)
        all_exits = model.forward_all_exits(x)
        assert len(model.split_points) == 1 + 1 + 15 + 2
        assert [e.after for e in model.exits] == ["s1c4", "s2c4", "s3c4"]
        for split in model.split_points:
            features, device_exits = model.head(x, upto=split)
            final = model.tail(features, start=split)
            assert torch.allclose(final, full, atol=1e-5), split
            for index, logits in device_exits:
                assert torch.allclose(logits, all_exits[index], atol=1e-5)
    assert model.head(x, upto="s3c4")[0].shape[-1] == (8 if shape[1] == 32 else 7)


def test_registry_builds_a_measured_network_by_index():
    from testbed.devices.data_table import latency_table

    model = build_model("nb201-7", in_channels=1, input_size=28)
    assert model.arch == latency_table().archs[7]
    assert model.config["arch_index"] == 7
    with pytest.raises(KeyError, match="arch_index must be 0..1998"):
        build_model("nb201-5000")


@pytest.mark.parametrize("arch,problem", [
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|", "2 node"),
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|", "node 2 has 1 edge"),
    ("|conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown operation 'conv_5x5'"),
    ("|none~0|+|none~0|none~0|+|none~0|none~1|none~2|", "node 2 reads nodes [0, 0]"),
    ("|none0|+|none~0|none~1|+|none~0|none~1|none~2|", "is not 'op~source'"),
    ("none~0|+|none~0|none~1|+|none~0|none~1|none~2|", "must start and end with '|'"),
])
def test_bad_arch_strings_say_what_is_wrong_and_what_is_allowed(arch, problem):
    with pytest.raises(ArchStringError, match="model.arch") as info:
        parse_arch(arch)
    message = str(info.value)
    assert problem in message
    assert "nor_conv_3x3" in message and "|op~0|+|op~0|op~1|" in message
    assert isinstance(info.value, ConfigError) and isinstance(info.value, ValueError)
