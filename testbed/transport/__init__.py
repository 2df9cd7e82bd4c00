"""Tensor transport over ZeroMQ that survives disconnections (wire protocol: docs/protocol.md).

Public API (imported lazily so ``testbed --help`` stays fast)::

    Client(endpoint, *, heartbeat_ivl=0.5, heartbeat_timeout=3.0, curve=None)
        .request(tensors, *, op, deadline_s, codec="raw", reply_codec="raw", meta=None) -> Result
        .submit(...) -> seq ; .poll(timeout) -> list[Result] ; .ping() ; .close()
    Server(endpoint, *, handlers={"echo": fn}, workers=2, max_queue=16, curve_dir=None)
        .start() / .serve_forever() / .stop()
    Result, Request, encode, decode, codec_info, available_codecs, generate_keys, CurveKeys
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Client": "client", "Result": "client",
    "Server": "server", "Request": "server", "BUILTIN_HANDLERS": "server",
    "encode": "codecs", "decode": "codecs", "codec_info": "codecs", "available_codecs": "codecs",
    "CodecInfo": "codecs", "CodecError": "codecs",
    "ProtocolError": "protocol",
    "generate_keys": "keys", "CurveKeys": "keys",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'testbed.transport' has no attribute {name!r}")
    return getattr(importlib.import_module(f"testbed.transport.{_EXPORTS[name]}"), name)
