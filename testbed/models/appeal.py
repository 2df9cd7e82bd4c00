"""AppealNet pair (Li et al., DAC 2021): a little edge network with two heads and a big cloud model.

The edge network outputs class logits ``f(x)`` and ``q(x)`` in [0, 1], the predicted probability
that keeping the answer on the edge loses nothing. Inference: ``q(x) >= delta`` answers locally,
otherwise the raw input is appealed to the cloud model.

Training objective (our reading of the paper's joint optimisation; the notes mark the exact form
as unverified)::

    L = mean[ q * CE(f(x), y) + (1 - q) * CE(cloud(x), y) + lam * (1 - q) ] + w_edge * mean CE(f(x), y)

The first two terms are the expected loss of the *system* (edge answer kept with probability q,
cloud answer otherwise), so the frozen cloud model's per-example correctness is the target the
appeal head learns: dL/dq = CE_edge - CE_cloud - lam, i.e. keep locally exactly when the cloud
would not beat the edge by more than the appeal cost ``lam``. The last term keeps the edge
classifier trained on every example (q alone would let it ignore hard ones).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from testbed.models.nets import ResNetEE, max_softmax


class AppealEdgeNet(nn.Module):
    """Small ResNet backbone with a classification head and an appeal (difficulty) head."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: float = 0.25,
                 blocks_per_stage: int = 1, input_size: int = 16):
        super().__init__()
        backbone = ResNetEE(num_classes, in_channels, width, blocks_per_stage, input_size=input_size)
        self.blocks = backbone.blocks
        self.block_names = backbone.block_names
        channels = backbone.exit_heads[-1][-1].in_features
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(channels, num_classes)
        self.appeal_head = nn.Sequential(nn.Linear(channels + num_classes, 32), nn.ReLU(inplace=True),
                                         nn.Linear(32, 1))
        # Start by trusting the edge (q ~ 0.9) so early gradients do not saturate q at 0.
        nn.init.constant_(self.appeal_head[-1].bias, 2.0)
        self.config = dict(num_classes=num_classes, in_channels=in_channels, width=width,
                           blocks_per_stage=blocks_per_stage, input_size=input_size)

    def forward_with_appeal(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (logits, q) where q in [0,1] is the predicted 'safe to answer locally' probability."""
        for block in self.blocks:
            x = block(x)
        pooled = self.pool(x)
        logits = self.classifier(pooled)
        # The appeal head also sees the (detached) softmax: difficulty shows in the edge's own output.
        q_input = torch.cat([pooled, F.softmax(logits, dim=1).detach()], dim=1)
        return logits, torch.sigmoid(self.appeal_head(q_input)).squeeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_appeal(x)[0]

    def forward_all_exits(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.forward(x)]


def appeal_loss(logits: torch.Tensor, q: torch.Tensor, labels: torch.Tensor, cloud_loss: torch.Tensor,
                appeal_cost: float = 0.3, edge_weight: float = 0.5) -> torch.Tensor:
    """AppealNet-style joint loss; ``cloud_loss`` is the frozen cloud model's per-example CE."""
    edge_loss = F.cross_entropy(logits, labels, reduction="none")
    system = q * edge_loss + (1 - q) * cloud_loss + appeal_cost * (1 - q)
    return system.mean() + edge_weight * edge_loss.mean()


def appeal_tradeoff(edge_logits: torch.Tensor, q: torch.Tensor, cloud_logits: torch.Tensor,
                    labels: torch.Tensor, appeal_rates=(0.0, 0.1, 0.2, 0.3, 0.5, 1.0)) -> list[dict]:
    """System accuracy at fixed appeal rates, gating on q vs on the edge's max softmax (baseline)."""
    edge_correct = edge_logits.argmax(1) == labels
    cloud_correct = cloud_logits.argmax(1) == labels
    softmax_score = max_softmax(edge_logits)
    rows = []
    n = len(labels)
    for rate in appeal_rates:
        k = int(round(rate * n))
        row = {"appeal_rate": rate}
        for gate_name, score in (("q_gate", q), ("softmax_gate", softmax_score)):
            appealed = torch.zeros(n, dtype=torch.bool)
            if k:
                appealed[torch.argsort(score)[:k]] = True  # least confident go to the cloud
            correct = torch.where(appealed, cloud_correct, edge_correct)
            row[f"{gate_name}_accuracy"] = round(float(correct.float().mean()), 4)
        rows.append(row)
    return rows
