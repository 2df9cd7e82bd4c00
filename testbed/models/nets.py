"""Split-able early-exit networks: a chain of named blocks with exit heads between them.

Every model is a ``SplittableNet``: ``blocks`` run in order, each block's output is a *split point*
(where the device can stop and ship features to the cloud), and *exit heads* sit after some split
points. The last exit is the final classifier, so device-only, cloud-only and every split in
between use the same two calls::

    features, exits = model.head(x, upto="s2b0")     # device: blocks up to s2b0 + exits passed
    logits = model.tail(features, start="s2b0")       # cloud: the rest, final exit's logits

``upto="input"`` is cloud-only (the head does nothing); ``upto=model.split_points[-1]`` is
device-only (every exit, including the final one, runs on the device).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

INPUT = "input"


@dataclass(frozen=True)
class ExitInfo:
    """Exit head ``index`` reads the output of split point ``after``."""

    index: int
    after: str


def max_softmax(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Per-row confidence: the largest softmax probability (of temperature-scaled logits). The one
    definition behind exit thresholds, the max-softmax gate and the validation pass."""
    return torch.softmax(logits / temperature, dim=1).amax(dim=1)


def exit_head(channels: int, num_classes: int, hidden: int | None = None, groups: int = 1) -> nn.Module:
    """Small classifier for an intermediate feature map (conv -> pool -> linear).

    A conv before pooling gives early exits some capacity of their own (BranchyNet/SDN style)
    without touching the backbone; the final exit passes ``hidden=0`` for a plain pool+linear.
    ``groups`` keeps the predefined-sparse variant sparse in its exits too.
    """
    if hidden == 0:
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))
    hidden = hidden or max(16, channels)
    return nn.Sequential(
        nn.Conv2d(channels, hidden, 3, padding=1, bias=False, groups=groups),
        nn.BatchNorm2d(hidden),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(hidden, num_classes),
    )


class SplittableNet(nn.Module):
    """A chain of named blocks with exit heads; subclasses only build ``blocks`` and heads."""

    def __init__(self, block_names: list[str], blocks: list[nn.Module], exit_after: list[str],
                 exit_heads: list[nn.Module], config: dict):
        super().__init__()
        if len(block_names) != len(blocks) or len(set(block_names)) != len(block_names):
            raise ValueError("block names must be unique, one per block")
        if exit_after[-1] != block_names[-1]:
            raise ValueError("the last exit (final classifier) must sit after the last block")
        unknown = [name for name in exit_after if name not in block_names]
        if unknown:
            raise ValueError(f"exits after unknown blocks: {unknown}; blocks are {block_names}")
        self.block_names = list(block_names)
        self.blocks = nn.ModuleList(blocks)
        self.exit_heads = nn.ModuleList(exit_heads)
        self.exits = [ExitInfo(i, after) for i, after in enumerate(exit_after)]
        self.config = dict(config)
        self._position = {name: i + 1 for i, name in enumerate(self.block_names)}
        self._position[INPUT] = 0

    # -- structure --------------------------------------------------------------------------------

    @property
    def split_points(self) -> list[str]:
        """Names in execution order; ``input`` first (cloud-only), last block last (device-only)."""
        return [INPUT, *self.block_names]

    @property
    def num_exits(self) -> int:
        return len(self.exits)

    def split_index(self, split: str | int) -> int:
        """Position of a split point: 0 for ``input``, k after the k-th block."""
        if isinstance(split, int):
            if not 0 <= split <= len(self.blocks):
                raise KeyError(f"split index {split} out of range 0..{len(self.blocks)}")
            return split
        try:
            return self._position[split]
        except KeyError:
            raise KeyError(f"unknown split point {split!r}; known: {self.split_points}") from None

    def exits_between(self, start: str | int, end: str | int) -> list[ExitInfo]:
        """Exits whose split point lies in (start, end]."""
        lo, hi = self.split_index(start), self.split_index(end)
        return [e for e in self.exits if lo < self._position[e.after] <= hi]

    # -- execution --------------------------------------------------------------------------------

    def _run(self, x: torch.Tensor, lo: int, hi: int) -> tuple[torch.Tensor, list[tuple[int, torch.Tensor]]]:
        exits_by_position: dict[int, list[ExitInfo]] = {}
        for info in self.exits:
            exits_by_position.setdefault(self._position[info.after], []).append(info)
        passed: list[tuple[int, torch.Tensor]] = []
        for position in range(lo + 1, hi + 1):
            x = self.blocks[position - 1](x)
            for info in exits_by_position.get(position, []):
                passed.append((info.index, self.exit_heads[info.index](x)))
        return x, passed

    def head(self, x: torch.Tensor, upto: str | int) -> tuple[torch.Tensor, list[tuple[int, torch.Tensor]]]:
        """Device part: run blocks up to split ``upto``; return its features and the exits passed."""
        return self._run(x, 0, self.split_index(upto))

    def tail(self, features: torch.Tensor, start: str | int, return_exits: bool = False):
        """Cloud part: continue from split ``start``; return the final logits (and exits if asked).

        From the last split point only the final exit head runs (its logits already came with
        ``head``, so a device-only plan never needs ``tail``).
        """
        lo = self.split_index(start)
        x, passed = self._run(features, lo, len(self.blocks))
        if lo == len(self.blocks):
            passed = [(self.num_exits - 1, self.exit_heads[-1](x))]
        final = passed[-1][1]
        return (final, passed) if return_exits else final

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(x, start=INPUT)

    def forward_all_exits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every exit, in exit order (training and per-exit evaluation)."""
        _, passed = self._run(x, 0, len(self.blocks))
        return [logits for _, logits in passed]


# --- ResNet (CIFAR style) --------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """ResNet basic block; ``groups > 1`` is the predefined-sparse variant (see ``sparse.py``)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, groups: int = 1):
        super().__init__()
        self.groups = groups
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False, groups=groups)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False, groups=groups)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride, bias=False, groups=groups), nn.BatchNorm2d(out_ch))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        if self.groups > 1:
            out = channel_shuffle(out, self.groups)
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Fixed permutation so grouped convs in sequence still mix all channels (ShuffleNet)."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def _round_channels(value: float, multiple: int = 4) -> int:
    return max(multiple, int(round(value / multiple)) * multiple)


class ResNetEE(SplittableNet):
    """CIFAR ResNet-(6n+2) with 3 stages; split points after the stem and after every block.

    Blocks are named ``stem``, ``s{stage}b{index}``; default exits sit after the first block of
    each stage and after the final block, which spreads exits over the FLOPs as SPINN does
    (about 12%, 45% and 77% of the backbone FLOPs for ResNet-20).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: float = 0.5,
                 blocks_per_stage: int = 3, exit_after: list[str] | None = None, groups: int = 1,
                 input_size: int = 16, exit_hidden: int | None = None):
        widths = [_round_channels(16 * width * k, 4) for k in (1, 2, 4)]
        if any(w % groups for w in widths):
            raise ValueError(f"stage widths {widths} must be divisible by groups={groups}")
        names: list[str] = ["stem"]
        blocks: list[nn.Module] = [nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True))]
        channels_after = {"stem": widths[0]}
        in_ch = widths[0]
        for stage, out_ch in enumerate(widths, start=1):
            for index in range(blocks_per_stage):
                stride = 2 if (stage > 1 and index == 0) else 1
                name = f"s{stage}b{index}"
                names.append(name)
                blocks.append(BasicBlock(in_ch, out_ch, stride, groups))
                channels_after[name] = out_ch
                in_ch = out_ch
        if exit_after is None:
            exit_after = ["s1b0", "s2b0", "s3b0"] if blocks_per_stage > 1 else ["s1b0", "s2b0"]
            exit_after = [*exit_after, names[-1]]
        elif exit_after[-1] != names[-1]:
            exit_after = [*exit_after, names[-1]]
        heads = [exit_head(channels_after[a], num_classes, 0 if i == len(exit_after) - 1 else exit_hidden,
                           groups) for i, a in enumerate(exit_after)]
        config = dict(num_classes=num_classes, in_channels=in_channels, width=width,
                      blocks_per_stage=blocks_per_stage, exit_after=list(exit_after), groups=groups,
                      input_size=input_size, exit_hidden=exit_hidden)
        super().__init__(names, blocks, exit_after, heads, config)


# --- MobileNetV2 -----------------------------------------------------------------------------------


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand -> 3x3 depthwise -> 1x1 linear projection (+ residual)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand: int):
        super().__init__()
        hidden = in_ch * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(in_ch, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch),
        ]
        self.body = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return x + out if self.use_residual else out


# (expansion t, channels c, repeats n, stride s) -- the ImageNet table shortened for 16-32 px inputs.
MOBILENETV2_STAGES = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 3, 2), (6, 96, 2, 1)]


class MobileNetV2EE(SplittableNet):
    """MobileNetV2 for small inputs; split points after the stem, every inverted block and the 1x1 'last' conv."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: float = 0.5,
                 depth: float = 1.0, last_channels: int = 256, exit_after: list[str] | None = None,
                 input_size: int = 16, exit_hidden: int | None = None):
        stem_ch = _round_channels(32 * width, 8)
        names: list[str] = ["stem"]
        blocks: list[nn.Module] = [nn.Sequential(
            nn.Conv2d(in_channels, stem_ch, 3, 1, 1, bias=False), nn.BatchNorm2d(stem_ch), nn.ReLU6(inplace=True))]
        channels_after = {"stem": stem_ch}
        in_ch = stem_ch
        index = 0
        for expand, channels, repeats, stride in MOBILENETV2_STAGES:
            out_ch = _round_channels(channels * width, 8)
            for r in range(max(1, int(round(repeats * depth)))):
                name = f"b{index}"
                names.append(name)
                blocks.append(InvertedResidual(in_ch, out_ch, stride if r == 0 else 1, expand))
                channels_after[name] = out_ch
                in_ch, index = out_ch, index + 1
        last_ch = _round_channels(last_channels * width, 8)
        names.append("last")
        blocks.append(nn.Sequential(nn.Conv2d(in_ch, last_ch, 1, bias=False), nn.BatchNorm2d(last_ch),
                                    nn.ReLU6(inplace=True)))
        channels_after["last"] = last_ch
        if exit_after is None:
            inner = names[1:-1]
            exit_after = [inner[len(inner) // 3], inner[(2 * len(inner)) // 3]]
        if exit_after[-1] != "last":
            exit_after = [*exit_after, "last"]
        heads = [exit_head(channels_after[a], num_classes, 0 if i == len(exit_after) - 1 else exit_hidden)
                 for i, a in enumerate(exit_after)]
        config = dict(num_classes=num_classes, in_channels=in_channels, width=width, depth=depth,
                      last_channels=last_channels, exit_after=list(exit_after), input_size=input_size,
                      exit_hidden=exit_hidden)
        super().__init__(names, blocks, exit_after, heads, config)
