"""Split computing + early exit on the predefined-sparsity model."""

from __future__ import annotations

from testbed.strategies.base import CODECS, Param, Plan, Strategy


class ScEeSparse(Strategy):
    """SC+EE on a predefined-sparse network (Capogrosso et al., FDL 2024, arXiv 2407.11763).

    Formulation: the sparse model (``resnet20-ee-sparse``: fixed 1/4 channel-group sparsity from
    initialisation) is split after its head; an early exit sits at the split; the device answers
    when the exit's calibrated confidence ≥ ``threshold``, else ships the int8+zstd split tensor and
    the server finishes with the sparse tail. The paper's code holds only the sparse MLP trainer,
    so the split point (default: the first exit's block) and the threshold are fixed parameters
    (choice made here). Disconnection: while the link is estimated down the device runs the sparse
    model to the end; an offload that times out answers with the split's exit (``fallback_exit``).
    """

    name = "sc-ee-sparse"
    params = {"model": Param("resnet20-ee-sparse", str), "split": Param(None, str, optional=True),
              "threshold": Param(0.9, float, 0.0, 1.0), "codec": Param("int8+zstd", str, choices=CODECS)}

    def models(self, session_model):
        return {"device": [self.p["model"]], "cloud": [self.p["model"]]}

    def plan(self, estimates, profiles, context):
        profile = profiles[self.p["model"]]
        split = self.p["split"] or profile.exit_after[0]
        if split not in profile.split_points:
            from testbed.errors import ConfigError

            raise ConfigError("strategy_params.split", f"unknown split point {split!r}; "
                              f"known: {', '.join(profile.split_points)}")
        if not estimates.connected:
            split = profile.last_split
        return Plan(split=split, model=self.p["model"], exit_threshold=self.p["threshold"], codec=self.p["codec"],
                    fallback=True)
