"""AppealNet: a two-head edge model that appeals hard inputs to the cloud model."""

from __future__ import annotations

import numpy as np

from testbed.strategies.base import INPUT, Param, Plan, Strategy


class AppealNet(Strategy):
    """AppealNet (Li et al., DAC 2021): answer on the edge unless the appeal head says the input is hard.

    Formulation: the edge network outputs class logits f(x) and q(x) ∈ [0, 1], the predicted
    probability that the edge answer is as good as the cloud's; ``q(x) ≥ δ`` answers locally,
    otherwise the raw input goes to the big cloud model (``appealnet-cloud``). δ is ``delta`` or,
    if null, the validation quantile of q that appeals ``appeal_rate`` of the inputs (choice made
    here: the paper sweeps δ). Disconnection: while the link is estimated down nothing is
    appealed; an appeal that times out keeps the edge answer (``fallback_exit``).

    ``score: max-softmax`` gates the same edge/cloud pair on the edge classifier's confidence
    instead of q(x): the baseline the paper compares its appeal head with (at equal appeal rates).
    """

    name = "appealnet"
    params = {"delta": Param(None, float, 0.0, 1.0, optional=True),
              "appeal_rate": Param(0.2, float, 0.0, 1.0),
              "score": Param("appeal", str, choices=("appeal", "max-softmax"),
                             help="what is compared with delta: the appeal head's q(x) or the max softmax"),
              "codec": Param("raw", str, choices=("raw", "float16", "int8", "int8+zstd")),
              "edge_model": Param("appealnet-edge", str), "cloud_model": Param("appealnet-cloud", str)}

    def models(self, session_model):
        return {"device": [self.p["edge_model"]], "cloud": [self.p["cloud_model"]]}

    def delta(self, profile) -> float:
        if self.p["delta"] is not None:
            return self.p["delta"]
        scores = profile.edge_confidence if self.p["score"] == "max-softmax" else profile.appeal_q
        if scores is None or not len(scores):
            return 0.5
        return float(np.quantile(scores, self.p["appeal_rate"]))

    def plan(self, estimates, profiles, context):
        profile = profiles[self.p["edge_model"]]
        delta = self.delta(profile) if estimates.connected else 0.0
        return Plan(split=INPUT, model=self.p["edge_model"], cloud_model=self.p["cloud_model"], codec=self.p["codec"],
                    appeal_threshold=delta, appeal_score=self.p["score"], fallback=True,
                    note=f"delta {delta:.3f} on {self.p['score']}")
