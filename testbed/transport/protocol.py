"""Wire protocol v1: framing, limits and header validation (see docs/protocol.md).

A message is ``[MAGIC, header JSON, chunk frames...]`` (a ROUTER adds the routing
id in front). Everything a peer sends is validated here *before* any buffer is
allocated, so a malformed or hostile message costs bounded memory and never
reaches a handler.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import zmq

log = logging.getLogger("testbed.transport")

VERSION = 1
MAGIC_PREFIX = b"SPLT"
MAGIC = MAGIC_PREFIX + bytes([VERSION])

KiB = 1024
MiB = 1024 * KiB

CHUNK = 256 * KiB  # default payload frame size; heartbeats must fit one frame at the slowest rate
MAX_CHUNK = 256 * KiB  # default largest payload frame a receiver accepts
CHUNK_LIMIT = 16 * MiB  # largest chunk / max_chunk a peer may be configured with
MAX_HEADER = 4 * KiB
FRAME_SLACK = 64 * KiB  # ZMQ_MAXMSGSIZE = max_chunk + this (header frame and slack)
MAX_FRAME = MAX_CHUNK + FRAME_SLACK  # ZMQ_MAXMSGSIZE: libzmq refuses larger frames before allocating
MAX_TENSOR = 64 * MiB  # per tensor, both on the wire and decoded
MAX_MESSAGE = 128 * MiB  # all tensors of one message together
MAX_TENSORS = 64
MAX_NDIM = 8
MAX_META = 2 * KiB  # serialized ``meta`` inside the header
MIN_CHUNK = 4 * KiB  # bounds the frame count: a tensor may not be sliced finer than this
MAX_DEPTH = 32  # JSON nesting of a header (the header object is depth 1); deeper input never reaches a parser stack
MAX_KEYS = 64  # keys in any one JSON object of a header
MAX_NAME = 64  # characters of client, op and tensor names
MAX_SEQ = 2**63 - 1  # seq, deadline_ns and budget_ns fit a signed 64-bit integer
MAX_ATTEMPT = 2**31 - 1
ZERO_COPY_THRESHOLD = zmq.COPY_THRESHOLD  # smaller frames are copied: cheaper than tracking them

# Error codes a receiver answers, each documented in docs/protocol.md ("Error codes").
ERROR_CODES = ("bad_magic", "unsupported_version", "malformed_header", "header_too_large", "bad_dtype",
               "bad_shape", "too_large", "bad_codec", "size_mismatch", "frame_count", "bad_kind", "seq_reused",
               "unknown_op", "bad_payload", "handler_error", "reply_too_large", "shutting_down", "internal_error",
               "busy", "expired")

REQUEST_KINDS = ("infer", "ping")
REPLY_KINDS = ("result", "error", "busy", "expired", "pong")

# Wire dtype names (always little-endian) -> numpy storage dtype. bfloat16 has no
# numpy dtype: it travels as its raw 16-bit pattern and decodes to a torch tensor.
DTYPES: dict[str, np.dtype] = {
    "float32": np.dtype("<f4"),
    "float16": np.dtype("<f2"),
    "bfloat16": np.dtype("<i2"),
    "float64": np.dtype("<f8"),
    "uint8": np.dtype("u1"),
    "int8": np.dtype("i1"),
    "int16": np.dtype("<i2"),
    "int32": np.dtype("<i4"),
    "int64": np.dtype("<i8"),
    "bool": np.dtype("?"),
}
FLOAT_DTYPES = ("float32", "float16", "bfloat16", "float64")


class ProtocolError(Exception):
    """A peer sent something the protocol forbids; ``code`` goes into the error reply."""

    def __init__(self, code: str, message: str, header: dict | None = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.header = header or {}


def check_chunk(chunk: int, what: str = "chunk") -> int:
    """A chunk size is an int in [MIN_CHUNK, CHUNK_LIMIT]; returns it."""
    if not _is_int(chunk) or not MIN_CHUNK <= chunk <= CHUNK_LIMIT:
        raise ValueError(f"{what}={chunk!r} must be an int in [{MIN_CHUNK}, {CHUNK_LIMIT}]")
    return chunk


def chunk_for_link(min_rate_bps: float, heartbeat_timeout: float, *, safety: float = 4.0) -> int:
    """Largest chunk whose transfer at ``min_rate_bps`` fits ``heartbeat_timeout / safety``.

    libzmq resets its heartbeat timer only when a whole frame is decoded, so one chunk
    must cross the slowest link well within the timeout. Rounded down to a power of two
    in [MIN_CHUNK, CHUNK_LIMIT]: 2 Mbit/s with 3 s gives 128 KiB, 1 Gbit/s gives 16 MiB.
    """
    budget = min_rate_bps / 8 * heartbeat_timeout / safety
    chunk = MIN_CHUNK
    while chunk * 2 <= min(budget, CHUNK_LIMIT):
        chunk *= 2
    return chunk


def now_ns() -> int:
    """The one clock of the testbed: CLOCK_MONOTONIC, shared by all network namespaces."""
    return time.monotonic_ns()


def encode_header(header: dict) -> bytes:
    raw = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
    if len(raw) > MAX_HEADER:
        raise ValueError(f"header is {len(raw)} bytes, the protocol allows {MAX_HEADER}; shrink meta")
    return raw


def _require(cond: bool, code: str, message: str, header: dict | None = None) -> None:
    if not cond:
        raise ProtocolError(code, message, header)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _check_structure(header: Any) -> None:
    """Nesting depth and keys per object, walked with an explicit stack (no recursion)."""
    stack = [(header, 1)]
    while stack:
        value, depth = stack.pop()
        _require(depth <= MAX_DEPTH, "malformed_header", f"header nests deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            _require(len(value) <= MAX_KEYS, "malformed_header", f"an object of the header has {len(value)} keys "
                     f"> {MAX_KEYS}")
            stack.extend((item, depth + 1) for item in value.values() if isinstance(item, (dict, list)))
        else:
            stack.extend((item, depth + 1) for item in value if isinstance(item, (dict, list)))


def parse_header_json(raw: bytes | memoryview) -> dict:
    """Bytes -> JSON object with the size, depth and key limits enforced; raises ProtocolError."""
    _require(len(raw) <= MAX_HEADER, "header_too_large", f"header is {len(raw)} bytes > {MAX_HEADER}")
    raw = bytes(raw)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError("malformed_header", f"header is not UTF-8: {exc}") from None
    try:
        header = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:  # the C scanner stops at the interpreter's recursion limit, cleanly
        raise ProtocolError("malformed_header", f"header nests deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # JSONDecodeError, NaN/Infinity, integers over 4300 digits
        raise ProtocolError("malformed_header", f"header is not JSON: {exc}") from None
    # Brackets and colons bound depth and keys per object from above: small headers skip the walk.
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH or raw.count(b":") > MAX_KEYS:
        _check_structure(header)
    _require(isinstance(header, dict), "malformed_header", "header is not a JSON object")
    return header


def _int_in(value: Any, low: int, high: int) -> bool:
    return _is_int(value) and low <= value <= high


def decode_header(raw: bytes | memoryview, max_chunk: int = MAX_CHUNK) -> dict:
    """Parse and validate a header frame (any kind); raises ProtocolError.

    The checks run in the order of docs/protocol.md ("Validation"). ``max_chunk`` is the
    largest payload frame this receiver accepts (its MAXMSGSIZE minus slack); it bounds
    the smallest legal ``chunks`` count.
    """
    header = parse_header_json(raw)
    echo = {k: header.get(k) for k in ("client", "seq", "attempt", "op", "t")}
    _require(header.get("v") == VERSION, "unsupported_version", f"header v={header.get('v')!r}, want {VERSION}", echo)
    kind = header.get("kind")
    _require(kind in REQUEST_KINDS + REPLY_KINDS, "malformed_header",
             f"kind {kind!r} not in {REQUEST_KINDS + REPLY_KINDS}", echo)
    _require(isinstance(header.get("client"), str) and len(header["client"]) <= MAX_NAME, "malformed_header",
             f"client must be a string of <= {MAX_NAME} chars", echo)
    _require(_int_in(header.get("seq"), 0, MAX_SEQ), "malformed_header", f"seq must be an int in [0, {MAX_SEQ}]", echo)
    _require(_int_in(header.get("attempt", 1), 0, MAX_ATTEMPT), "malformed_header",
             f"attempt must be an int in [0, {MAX_ATTEMPT}]", echo)
    _require(isinstance(header.get("op", ""), str) and len(header.get("op", "")) <= MAX_NAME, "malformed_header",
             f"op must be a string of <= {MAX_NAME} chars", echo)
    if kind in REQUEST_KINDS:
        _require(_int_in(header.get("deadline_ns"), 0, MAX_SEQ), "malformed_header",
                 f"deadline_ns must be an int in [0, {MAX_SEQ}]", echo)
        _require(_int_in(header.get("budget_ns", 0), 0, MAX_SEQ), "malformed_header",
                 f"budget_ns must be an int in [0, {MAX_SEQ}]", echo)
        if "reply_codec" in header:
            from testbed.transport.codecs import CodecError, codec_info  # codecs imports this module

            try:
                codec_info(header["reply_codec"])
            except CodecError as exc:
                raise ProtocolError("bad_codec", f"reply_codec: {exc}", echo) from None
    if "max_chunk" in header:
        _require(_int_in(header["max_chunk"], MIN_CHUNK, CHUNK_LIMIT),
                 "malformed_header", f"max_chunk must be an int in [{MIN_CHUNK}, {CHUNK_LIMIT}]", echo)
    for key in ("meta", "t", "info"):
        _require(isinstance(header.get(key, {}), dict), "malformed_header", f"{key} must be an object", echo)
    descriptors = header.get("tensors", [])
    _require(isinstance(descriptors, list), "malformed_header", "tensors must be a list", echo)
    _require(len(descriptors) <= MAX_TENSORS, "too_large", f"{len(descriptors)} tensors > {MAX_TENSORS}", echo)
    total = 0
    names = set()
    for index, desc in enumerate(descriptors):
        total += validate_descriptor(desc, index, echo, max_chunk)
        name = desc.get("name") or str(index)
        _require(name not in names, "malformed_header", f"tensors[{index}].name {name!r} is used twice", echo)
        names.add(name)
    _require(total <= MAX_MESSAGE, "too_large", f"message carries {total} bytes > {MAX_MESSAGE}", echo)
    header.setdefault("attempt", 1)
    header.setdefault("tensors", [])
    return header


def checked_numel(shape: Sequence[int], limit: int) -> int:
    """Product of dims, refusing early once it passes ``limit`` (no overflow, no huge ints)."""
    numel = 1
    for dim in shape:
        numel *= dim
        if numel > limit:
            return limit + 1
    return numel


def validate_descriptor(desc: Any, index: int, echo: dict | None = None, max_chunk: int = MAX_CHUNK) -> int:
    """Check one tensor descriptor against the limits; returns its wire byte length."""
    from testbed.transport.codecs import CodecError, validate_codec  # codecs imports this module

    where = f"tensors[{index}]"
    _require(isinstance(desc, dict), "malformed_header", f"{where} is not an object", echo)
    _require(isinstance(desc.get("name", ""), str) and len(desc.get("name", "")) <= MAX_NAME, "malformed_header",
             f"{where}.name must be a string of <= {MAX_NAME} chars", echo)
    dtype = desc.get("dtype")
    _require(isinstance(dtype, str) and dtype in DTYPES, "bad_dtype", f"{where}.dtype {dtype!r} not in {sorted(DTYPES)}",
             echo)
    shape = desc.get("shape")
    _require(isinstance(shape, list) and len(shape) <= MAX_NDIM, "bad_shape",
             f"{where}.shape must be a list of <= {MAX_NDIM} dims", echo)
    _require(all(_is_int(d) and d >= 0 for d in shape), "bad_shape", f"{where}.shape dims must be ints >= 0", echo)
    numel = checked_numel(shape, MAX_TENSOR)
    _require(numel * DTYPES[dtype].itemsize <= MAX_TENSOR, "too_large",
             f"{where} decodes to more than {MAX_TENSOR} bytes", echo)
    nbytes, chunks = desc.get("nbytes"), desc.get("chunks")
    _require(_is_int(nbytes) and nbytes >= 0, "malformed_header", f"{where}.nbytes must be an int >= 0", echo)
    _require(nbytes <= MAX_TENSOR, "too_large", f"{where}.nbytes={nbytes} > {MAX_TENSOR}", echo)
    _require(_is_int(chunks) and chunks >= 0, "malformed_header", f"{where}.chunks must be an int >= 0", echo)
    _require(-(-nbytes // max_chunk) <= chunks <= -(-nbytes // MIN_CHUNK),
             "size_mismatch", f"{where}.chunks={chunks!r}: {nbytes} bytes need "
             f"{-(-nbytes // max_chunk)}..{-(-nbytes // MIN_CHUNK)} frames", echo)
    try:
        validate_codec(desc, numel)
    except ValueError as exc:
        code = "bad_codec" if isinstance(exc, CodecError) else "size_mismatch"
        raise ProtocolError(code, f"{where}: {exc}", echo) from None
    return nbytes


# ---------------------------------------------------------------------------
# Sending and receiving whole messages
# ---------------------------------------------------------------------------


def split_chunks(buffer: memoryview, chunk: int = CHUNK) -> list[memoryview]:
    """Slices of <= ``chunk`` bytes (views, no copy) of a flat byte buffer."""
    return [buffer[off : off + chunk] for off in range(0, len(buffer), chunk)]


def send_message(sock: zmq.Socket, header: dict, payloads: Sequence[memoryview], *,
                 routing_id: bytes | None = None, chunk: int = CHUNK) -> int:
    """Send ``[routing_id], MAGIC, header, chunks...`` without blocking; returns bytes sent.

    Fills ``header["tensors"][i]["chunks"]``. Raises ``zmq.Again`` if the socket cannot
    take the message now (no peer with IMMEDIATE, or HWM reached): then nothing was sent,
    because libzmq admits a multipart message whole once its first part is accepted.
    """
    frames: list[Any] = []
    for desc, payload in zip(header["tensors"], payloads, strict=True):
        parts = split_chunks(payload, chunk)
        desc["chunks"] = len(parts)
        frames.extend(parts)
    head = encode_header(header)
    first = [routing_id, MAGIC, head] if routing_id is not None else [MAGIC, head]
    all_frames = first + frames
    last = len(all_frames) - 1
    for i, frame in enumerate(all_frames):
        flags = zmq.NOBLOCK | (zmq.SNDMORE if i < last else 0)
        sock.send(frame, flags, copy=len(frame) < ZERO_COPY_THRESHOLD)
    return len(head) + len(MAGIC) + sum(len(f) for f in frames)


def drain(sock: zmq.Socket) -> int:
    """Discard the remaining frames of the current message; returns how many."""
    scratch = bytearray(1)
    count = 0
    while sock.get(zmq.RCVMORE):
        sock.recv_into(scratch)
        count += 1
    return count


def receive_message(sock: zmq.Socket, max_chunk: int = MAX_CHUNK) -> tuple[dict, list[np.ndarray], int]:
    """Receive the rest of one message (after any routing id) into fresh aligned buffers.

    Returns ``(header, wire_buffers, nbytes)``; each wire buffer is a writable uint8
    array of exactly the descriptor's ``nbytes``, filled with ``recv_into`` so the
    payload is copied once, from libzmq into memory the caller owns. On any violation
    the rest of the message is drained and ProtocolError raised.
    """
    try:
        magic = sock.recv(zmq.NOBLOCK)
        if magic != MAGIC:
            if magic[:4] == MAGIC_PREFIX and len(magic) == 5:
                raise ProtocolError("unsupported_version", f"protocol version {magic[4]}, this peer speaks {VERSION}")
            raise ProtocolError("bad_magic", f"first frame {bytes(magic[:8])!r} is not {MAGIC!r}")
        _require(bool(sock.get(zmq.RCVMORE)), "malformed_header", "message has no header frame")
        raw_header = sock.recv(zmq.NOBLOCK)
        header = decode_header(raw_header, max_chunk)
        buffers = []
        total = len(magic) + len(raw_header)
        for index, desc in enumerate(header["tensors"]):
            wire = np.empty(desc["nbytes"], dtype=np.uint8)
            view = memoryview(wire)
            offset = 0
            for _ in range(desc["chunks"]):
                _require(bool(sock.get(zmq.RCVMORE)), "frame_count",
                         f"tensors[{index}] announces {desc['chunks']} chunks, message ended early", header)
                size = sock.recv_into(view[offset:], flags=zmq.NOBLOCK)
                _require(size > 0, "frame_count", f"tensors[{index}] has an empty chunk frame", header)
                _require(size <= len(view) - offset and size <= max_chunk, "size_mismatch",
                         f"tensors[{index}] chunk of {size} bytes overruns nbytes={desc['nbytes']}", header)
                offset += size
            _require(offset == desc["nbytes"], "size_mismatch",
                     f"tensors[{index}] chunks carry {offset} bytes, header says {desc['nbytes']}", header)
            buffers.append(wire)
            total += offset
        _require(not sock.get(zmq.RCVMORE), "frame_count", "message has more frames than the header announces", header)
        return header, buffers, total
    except ProtocolError:
        drain(sock)
        raise
