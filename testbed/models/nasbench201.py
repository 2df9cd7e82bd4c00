"""NAS-Bench-201 networks built from their ``arch`` string, split-able between cells, with exits.

The search space of Dong & Yang, "NAS-Bench-201: Extending the Scope of Reproducible Neural
Architecture Search" (ICLR 2020): a cell is a 4-node DAG whose 6 edges each carry one of five
operations, written ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` (node 1 reads node 0; node 2 reads
nodes 0 and 1; node 3, the cell's output, reads nodes 0, 1 and 2; a node is the sum of its edges).
The network follows the benchmark's reference code: a 3x3 conv + BN stem, 3 stages of N=5 cells at
C=16/32/64 channels, a residual reduction block (stride 2) between stages, then BN-ReLU, global
average pooling and a linear classifier. Convolutions are ReLU-Conv-BN, as in the benchmark.

``none`` edges contribute zeros; they are skipped instead of computed as ``x * 0`` (the same
result, without spending time on a multiplication the measured latencies show as free). A node
whose edges are all ``none`` is a zero tensor.

As a ``SplittableNet`` (see ``nets.py``) the blocks are ``stem``, ``s1c0``..``s1c4``, ``r2``,
``s2c0``..``s2c4``, ``r3``, ``s3c0``..``s3c4``; by default exits sit after each stage's last cell, and
the final exit is the benchmark's own BN-ReLU-pool-linear classifier.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from testbed.errors import ConfigError
from testbed.models.nets import SplittableNet, exit_head

OPERATIONS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
ARCH_FORMAT = "|op~0|+|op~0|op~1|+|op~0|op~1|op~2|"
_EDGE = re.compile(r"^(?P<op>[a-z0-9_]+)~(?P<source>[0-9]+)$")


class ArchStringError(ConfigError, ValueError):
    """A NAS-Bench-201 ``arch`` string that does not describe a cell."""

    def __init__(self, arch: str, problem: str):
        super().__init__("model.arch", f"bad NAS-Bench-201 arch string {arch!r}: {problem}; expected "
                         f"{ARCH_FORMAT} with op one of {', '.join(OPERATIONS)}")


def parse_arch(arch: str) -> list[list[tuple[str, int]]]:
    """``arch`` -> per node (1..3) the list of (operation, source node); raises ``ArchStringError``."""
    if not isinstance(arch, str):
        raise ArchStringError(str(arch), f"must be a string, got {type(arch).__name__}")
    nodes = arch.strip().split("+")
    if len(nodes) != 3:
        raise ArchStringError(arch, f"{len(nodes)} node(s) separated by '+', expected 3")
    cell: list[list[tuple[str, int]]] = []
    for node_index, node in enumerate(nodes, start=1):
        if not (node.startswith("|") and node.endswith("|")) or len(node) < 2:
            raise ArchStringError(arch, f"node {node_index} {node!r} must start and end with '|'")
        edges = node[1:-1].split("|")
        if len(edges) != node_index:
            raise ArchStringError(arch, f"node {node_index} has {len(edges)} edge(s), expected {node_index}")
        parsed = []
        for edge in edges:
            match = _EDGE.match(edge)
            if not match:
                raise ArchStringError(arch, f"edge {edge!r} of node {node_index} is not 'op~source'")
            op, source = match["op"], int(match["source"])
            if op not in OPERATIONS:
                raise ArchStringError(arch, f"unknown operation {op!r} in node {node_index}")
            parsed.append((op, source))
        sources = sorted(source for _, source in parsed)
        if sources != list(range(node_index)):
            raise ArchStringError(arch, f"node {node_index} reads nodes {sources}, expected {list(range(node_index))}")
        cell.append(parsed)
    return cell


def relu_conv_bn(in_ch: int, out_ch: int, kernel: int, stride: int) -> nn.Sequential:
    # ReLU is not in-place: a cell feeds one node to several edges.
    return nn.Sequential(nn.ReLU(inplace=False),
                         nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, bias=False),
                         nn.BatchNorm2d(out_ch))


def make_operation(op: str, channels: int) -> nn.Module:
    """One cell edge (stride 1, channels in = out, as in every NAS-Bench-201 cell)."""
    if op == "skip_connect":
        return nn.Identity()
    if op == "nor_conv_1x1":
        return relu_conv_bn(channels, channels, 1, 1)
    if op == "nor_conv_3x3":
        return relu_conv_bn(channels, channels, 3, 1)
    if op == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise ValueError(f"operation {op!r} has no module (none edges are skipped)")


def live_nodes(cell: list[list[tuple[str, int]]]) -> set[int]:
    """Nodes whose value reaches the cell output through non-``none`` edges (node 3 itself included)."""
    live = {len(cell)}
    for node in range(len(cell), 0, -1):
        if node in live:
            live.update(source for op, source in cell[node - 1] if op != "none")
    return live


def constant_nodes(cell: list[list[tuple[str, int]]]) -> set[int]:
    """Nodes that do not depend on the cell input (every non-``none`` edge into them reads a constant node)."""
    constant: set[int] = set()
    for node, edges in enumerate(cell, start=1):
        if all(source in constant for op, source in edges if op != "none"):
            constant.add(node)
    return constant


# How a cell's graph is executed: what the network computes (``pruned``) and two costing variants.
GRAPHS = {
    "pruned": "dead nodes (no path to the output) are not computed; same output as the full cell",
    "full": "every node is computed, dead ones too, as NAS-Bench-201's reference code does",
    "folded": "costing only: also drops edges fed by constant nodes, as a graph compiler folds them "
              "(its output differs from the network's)",
}


class Cell(nn.Module):
    """One NAS-Bench-201 cell: node i = sum of its non-``none`` edges; returns node 3.

    ``graph="pruned"`` (the network's): nodes that cannot reach the output are not computed (the
    output is the same; deployed graphs prune such dead branches too). ``"full"`` and ``"folded"`` are
    for cost counting (see ``GRAPHS``): latency sources differ in which of these they executed.
    """

    def __init__(self, cell: list[list[tuple[str, int]]], channels: int, graph: str = "pruned"):
        super().__init__()
        if graph not in GRAPHS:
            raise ValueError(f"graph must be one of {', '.join(GRAPHS)}, got {graph!r}")
        self.channels = channels
        self.edges = nn.ModuleDict()
        self.node_inputs: list[list[tuple[str, int]] | None] = []
        live = live_nodes(cell) if graph != "full" else set(range(len(cell) + 1))
        constant = constant_nodes(cell) if graph == "folded" else set()
        for node_index, edges in enumerate(cell, start=1):
            if node_index not in live:
                self.node_inputs.append(None)
                continue
            inputs = []
            for op, source in edges:
                if op == "none" or source in constant:
                    continue
                key = f"n{node_index}_from{source}"
                self.edges[key] = make_operation(op, channels)
                inputs.append((key, source))
            self.node_inputs.append(inputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes: list[torch.Tensor | None] = [x]
        for inputs in self.node_inputs:
            if inputs is None:  # dead node: nothing downstream reads it
                nodes.append(None)
            elif not inputs:
                nodes.append(torch.zeros_like(x))
            else:
                total = self.edges[inputs[0][0]](nodes[inputs[0][1]])
                for key, source in inputs[1:]:
                    total = total + self.edges[key](nodes[source])
                nodes.append(total)
        return nodes[-1]


class ReductionBlock(nn.Module):
    """NAS-Bench-201's residual reduction block: two ReLU-Conv-BN 3x3 (stride 2) + pooled 1x1 shortcut."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv_a = relu_conv_bn(in_ch, out_ch, 3, 2)
        self.conv_b = relu_conv_bn(out_ch, out_ch, 3, 1)
        self.downsample = nn.Sequential(nn.AvgPool2d(2, 2, 0), nn.Conv2d(in_ch, out_ch, 1, 1, 0, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


def final_classifier(channels: int, num_classes: int) -> nn.Sequential:
    """The benchmark's head: BN-ReLU ('lastact'), global average pooling, linear."""
    return nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=False), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(channels, num_classes))


class NASBench201Net(SplittableNet):
    """A NAS-Bench-201 network (``arch`` string) as a split-able early-exit chain of cells."""

    def __init__(self, arch: str, num_classes: int = 10, in_channels: int = 3, input_size: int = 32,
                 channels: int = 16, cells_per_stage: int = 5, exit_after: list[str] | None = None,
                 exit_hidden: int | None = None, arch_index: int | None = None):
        cell = parse_arch(arch)
        if input_size < 4:
            raise ConfigError("model.input_size", f"must be >= 4 (two stride-2 reductions), got {input_size}")
        names: list[str] = ["stem"]
        blocks: list[nn.Module] = [nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))]
        channels_after = {"stem": channels}
        stage_ends = []
        width = channels
        for stage in (1, 2, 3):
            if stage > 1:
                names.append(f"r{stage}")
                blocks.append(ReductionBlock(width, width * 2))
                width *= 2
                channels_after[names[-1]] = width
            for index in range(cells_per_stage):
                names.append(f"s{stage}c{index}")
                blocks.append(Cell(cell, width))
                channels_after[names[-1]] = width
            stage_ends.append(names[-1])
        if exit_after is None:
            exit_after = list(stage_ends)
        elif not exit_after or exit_after[-1] != names[-1]:
            exit_after = [*exit_after, names[-1]]
        heads = [final_classifier(channels_after[after], num_classes) if i == len(exit_after) - 1
                 else exit_head(channels_after[after], num_classes, exit_hidden)
                 for i, after in enumerate(exit_after)]
        config = dict(arch=arch, num_classes=num_classes, in_channels=in_channels, input_size=input_size,
                      channels=channels, cells_per_stage=cells_per_stage, exit_after=list(exit_after),
                      exit_hidden=exit_hidden, arch_index=arch_index)
        super().__init__(names, blocks, exit_after, heads, config)
        self.arch = arch
        self.cell = cell


def arch_for_index(index: int) -> str:
    """The ``arch`` string of row ``arch_index`` of the shipped latency data (``testbed.devices``)."""
    from testbed.devices.data_table import nb201_arch

    return nb201_arch(index)
