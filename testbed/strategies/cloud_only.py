"""Cloud-only: ship the input, run everything on the server."""

from __future__ import annotations

from testbed.strategies.base import INPUT, Param, Plan, Strategy


class CloudOnly(Strategy):
    """Cloud-only: send the (optionally uint8-encoded) input, run the full model on the server.

    Source: the server-only baseline of Neurosurgeon/SPINN/DADS. Formulation: split = input.
    ``codec`` raw sends float32; ``int8`` quantises the normalised image to one byte per pixel
    (per-tensor affine, what a camera's uint8 frame would cost). Disconnection: no local model,
    the request times out at its deadline (outcome ``timeout``).
    """

    name = "cloud-only"
    params = {"codec": Param("raw", str, choices=("raw", "float16", "int8", "int8+zstd"),
                             help="input encoding")}

    def models(self, session_model):
        return {"device": [session_model], "cloud": [session_model]}

    def plan(self, estimates, profiles, context):
        return Plan(split=INPUT, codec=self.p["codec"], note="cloud-only")
