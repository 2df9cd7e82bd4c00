"""Your own early-exit model: a tiny CNN with three blocks and an early exit after the first.

Referenced from an experiment as ``model: tiny_ee.py:build``. Subclassing ``testbed.SplittableNet``
is the whole protocol: name the blocks (every block's output is a split point), put exit heads
after some blocks (the last one after the last block is the final classifier), and pass a config.
"""

from torch import nn

from testbed import SplittableNet, exit_head


def conv_block(in_channels: int, out_channels: int, stride: int = 1) -> nn.Module:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class TinyEarlyExit(SplittableNet):
    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 8):
        names = ["conv1", "conv2", "conv3"]
        blocks = [conv_block(in_channels, width), conv_block(width, 2 * width, stride=2),
                  conv_block(2 * width, 2 * width)]
        exit_after = ["conv1", "conv3"]
        heads = [exit_head(width, num_classes, hidden=8),     # early exit: small conv + pool + linear
                 exit_head(2 * width, num_classes, hidden=0)]  # final exit: pool + linear
        config = {"num_classes": num_classes, "in_channels": in_channels, "width": width}
        super().__init__(names, blocks, exit_after, heads, config)


def build(num_classes: int, in_channels: int, width: int = 8) -> TinyEarlyExit:
    """Called with the dataset's num_classes and in_channels (the arguments it declares)."""
    return TinyEarlyExit(num_classes=num_classes, in_channels=in_channels, width=width)
