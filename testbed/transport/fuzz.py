"""Fuzzing the tensor server: hypothesis-generated hostile messages against a real ``testbed serve``.

Used by ``tests/test_transport_fuzz.py`` (bounded run) and ``scripts/fuzz_server.py``
(long run). Every case starts from a valid request (random kind, op, dtypes, shapes,
codecs, real payloads) and applies structured mutations (header keys and descriptor
fields replaced by arbitrary JSON, deep or wide nesting, extreme integers, removed
keys, frames dropped, duplicated, emptied, truncated or added) or byte-level ones
(bytes of the header flipped, inserted or deleted). After each case the harness checks
that the server process is alive, that a normal echo is answered within 1 s, and
that every reply it got is a valid protocol message with a documented code.

Needs ``hypothesis`` (``pip install -e .[dev]``); the server is a subprocess on
127.0.0.1 only.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zmq
from hypothesis import strategies as st

from testbed.transport.codecs import available_codecs, encode
from testbed.transport.protocol import (
    ERROR_CODES,
    MAGIC,
    MAX_HEADER,
    REPLY_KINDS,
    ProtocolError,
    decode_header,
    now_ns,
    split_chunks,
)

REPO = Path(__file__).resolve().parents[2]
WIRE_DTYPES = ["float32", "float16", "float64", "uint8", "int8", "int16", "int32", "int64", "bool"]
OPS = ["echo", "discard", "sleep", "nonexistent", ""]
RAW_MARK = "__fuzz_raw_{}__"  # replaced by raw JSON text after dumping (nesting json.dumps would refuse)


@dataclass
class Case:
    """One hostile message: its frames and a short description of the mutations (for failures)."""

    frames: list[bytes]
    mutations: list[str]

    def __repr__(self) -> str:
        sizes = [len(f) for f in self.frames]
        return f"Case(mutations={self.mutations}, frame_sizes={sizes[:8]}{'...' if len(sizes) > 8 else ''})"


# -- JSON values, including the shapes that broke the server ---------------------------

EXTREME_INTS = [-1, 0, 1, 2**31 - 1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64, -(2**63), 10**30]


def json_scalars() -> st.SearchStrategy:
    return st.one_of(st.none(), st.booleans(), st.sampled_from(EXTREME_INTS), st.integers(),
                     st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40))


def json_values() -> st.SearchStrategy:
    return st.recursive(json_scalars(), lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=8), inner, max_size=5)), max_leaves=20)


@st.composite
def raw_json(draw: Any) -> str:
    """JSON text json.dumps cannot produce or would refuse: deep, wide, huge numbers, NaN."""
    family = draw(st.sampled_from(["deep_list", "deep_dict", "mixed_deep", "wide_object", "wide_list",
                                   "long_string", "big_number", "constant"]))
    n = draw(st.integers(1, 3000))
    if family == "deep_list":
        return "[" * n + "]" * n
    if family == "deep_dict":
        return '{"a":' * n + "0" + "}" * n
    if family == "mixed_deep":
        return '[{"k":' * (n // 2) + "1" + "}]" * (n // 2)
    if family == "wide_object":
        return "{" + ",".join(f'"k{i}":{i}' for i in range(n)) + "}"
    if family == "wide_list":
        return "[" + ",".join("0" for _ in range(n)) + "]"
    if family == "long_string":
        return json.dumps("x" * n)
    if family == "big_number":
        return draw(st.sampled_from(["1" * min(n, 5000), "1e999", "-1e999", "1" * 4400]))
    return draw(st.sampled_from(["NaN", "Infinity", "-Infinity"]))


# -- valid requests -----------------------------------------------------------------------


JSON_VALUES = json_values()
JSON_OR_EXTREME = st.one_of(JSON_VALUES, st.sampled_from(EXTREME_INTS))
RAW_JSON = raw_json()


@st.composite
def tensors_and_payloads(draw: Any) -> tuple[list[dict], list[bytes]]:
    count = draw(st.integers(0, 3))
    descs, payloads = [], []
    for index in range(count):
        dtype = draw(st.sampled_from(WIRE_DTYPES))
        shape = draw(st.lists(st.integers(0, 5), max_size=3))
        codec = draw(st.sampled_from(available_codecs()))
        seed = draw(st.integers(0, 2**16))
        rng = np.random.default_rng(seed)
        if dtype == "bool":
            array = rng.random(shape) > 0.5
        elif dtype.startswith("float"):
            array = rng.standard_normal(shape).astype(dtype)
        else:
            array = rng.integers(0, 100, size=shape).astype(dtype)
        encoded = encode(array, codec, name=f"t{index}")
        descs.append(encoded.descriptor)
        payloads.append(bytes(encoded.payload))
    return descs, payloads


def build_frames(header: dict, payloads: list[bytes], raw_values: dict[str, str] | None = None,
                 chunk: int = 4096) -> tuple[bytes, list[bytes]]:
    """Header bytes (with raw JSON spliced in) and chunk frames; sets each descriptor's ``chunks``."""
    frames: list[bytes] = []
    descriptors = header.get("tensors")
    for desc, payload in zip(descriptors if isinstance(descriptors, list) else [], payloads):
        parts = [bytes(p) for p in split_chunks(memoryview(payload), chunk)]
        if isinstance(desc, dict):
            desc.setdefault("chunks", len(parts))
        frames.extend(parts)
    text = json.dumps(header, separators=(",", ":"))
    for mark, raw in (raw_values or {}).items():
        text = text.replace(json.dumps(mark), raw)
    return text.encode(), frames


def base_header(kind: str = "infer", op: str = "echo", tensors: list | None = None, **fields: Any) -> dict:
    header = {"v": 1, "kind": kind, "client": uuid.uuid4().hex, "seq": 1, "attempt": 1, "op": op,
              "deadline_ns": now_ns() + 5_000_000_000, "reply_codec": "raw", "meta": {}, "t": {"send": now_ns()},
              "max_chunk": 262144, "tensors": tensors or []}
    header.update(fields)
    return header


TENSORS = tensors_and_payloads()
HEADER_KEYS = ["v", "kind", "client", "seq", "attempt", "op", "deadline_ns", "budget_ns", "reply_codec", "meta",
               "tensors", "t", "max_chunk", "unknown_key"]
DESC_KEYS = ["name", "dtype", "shape", "codec", "nbytes", "chunks", "extra"]


@st.composite
def cases(draw: Any) -> Case:
    """A valid request, then 1..3 mutations."""
    descs, payloads = draw(TENSORS)
    kind = draw(st.sampled_from(["infer", "infer", "infer", "ping", "result"]))
    header = base_header(kind, draw(st.sampled_from(OPS)), descs)
    if header["op"] == "sleep":
        header["meta"] = {"sleep_s": draw(st.sampled_from([0, 0.001, -1, "x", None]))}
    raw_values: dict[str, str] = {}
    mutations: list[str] = []
    frame_ops: list[tuple[str, int, int]] = []
    byte_ops: list[tuple[str, int, int]] = []
    chunk = draw(st.sampled_from([4096, 65536, 262144]))
    for _ in range(draw(st.integers(1, 3))):
        what = draw(st.sampled_from(["set_key", "set_key", "raw_key", "del_key", "set_desc", "raw_desc",
                                     "del_desc", "frames", "frames", "bytes", "bytes", "many_tensors",
                                     "scalars", "none"]))
        mutations.append(what)
        if what == "set_key":
            header[draw(st.sampled_from(HEADER_KEYS))] = draw(JSON_VALUES)
        elif what == "raw_key":
            mark = RAW_MARK.format(len(raw_values))
            raw_values[mark] = draw(RAW_JSON)
            header[draw(st.sampled_from(HEADER_KEYS))] = mark
        elif what == "del_key":
            header.pop(draw(st.sampled_from(HEADER_KEYS)), None)
        elif what in ("set_desc", "raw_desc", "del_desc") and isinstance(header.get("tensors"), list) \
                and any(isinstance(d, dict) for d in header["tensors"]):
            objects = [d for d in header["tensors"] if isinstance(d, dict)]
            desc = objects[draw(st.integers(0, len(objects) - 1))]
            key = draw(st.sampled_from(DESC_KEYS))
            if what == "del_desc":
                desc.pop(key, None)
            elif what == "set_desc":
                desc[key] = draw(JSON_OR_EXTREME)
            else:
                mark = RAW_MARK.format(len(raw_values))
                raw_values[mark] = draw(RAW_JSON)
                desc[key] = mark
        elif what == "frames":
            frame_ops.append((draw(st.sampled_from(["drop", "dup", "empty", "truncate", "extend", "append",
                                                    "magic", "only_magic", "no_magic", "empty_message_part"])),
                              draw(st.integers(0, 1000)), draw(st.integers(0, 300_000))))
        elif what == "bytes":
            byte_ops.append((draw(st.sampled_from(["flip", "insert", "delete", "truncate"])),
                             draw(st.integers(0, MAX_HEADER)), draw(st.integers(0, 255))))
        elif what == "many_tensors":
            count = draw(st.integers(40, 80))
            header["tensors"] = [{"name": f"s{i}", "dtype": "float32", "shape": [], "codec": {"name": "raw"},
                                  "nbytes": 4} for i in range(count)]
            payloads = [b"\0\0\x80?"] * count
        elif what == "scalars":  # the valid echo whose reply header outgrew the limit (issue 12)
            header.update(op="echo", kind="infer")
            header["tensors"] = [{"name": f"scalar_{i:02d}", "dtype": "float32", "shape": [], "nbytes": 4}
                                 for i in range(48)]
            payloads = [b"\0\0\x80?"] * 48
    head, chunks = build_frames(header, payloads if isinstance(header.get("tensors"), list) else [],
                                raw_values, chunk)
    for op, position, value in byte_ops:
        position = position % (len(head) + 1)
        if op == "flip" and head:
            position %= len(head)
            head = head[:position] + bytes([head[position] ^ (value or 1)]) + head[position + 1:]
        elif op == "insert":
            head = head[:position] + bytes([value]) + head[position:]
        elif op == "delete":
            head = head[:position] + head[position + 1:]
        else:
            head = head[:position]
    frames = [MAGIC, head, *chunks]
    for op, position, size in frame_ops:
        frames = frames or [b""]
        index = position % len(frames)
        if op == "drop":
            del frames[index]
        elif op == "dup":
            frames.insert(index, frames[index])
        elif op == "empty":
            frames[index] = b""
        elif op == "truncate":
            frames[index] = frames[index][: size % (len(frames[index]) + 1)]
        elif op == "extend":
            frames[index] = frames[index] + bytes(size % 70_000)
        elif op == "append":
            frames.append(bytes(size % 400_000))  # may exceed MAXMSGSIZE: the server drops that connection
        elif op == "magic":
            frames[0] = bytes([size % 256]) * (size % 9)
        elif op == "only_magic":
            frames = frames[:1]
        elif op == "no_magic":
            frames = frames[1:] or [b""]
        else:
            frames.insert(index, b"")
    if not frames:
        frames = [b""]
    return Case(frames, mutations)


# -- the harness ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


@dataclass
class FuzzReport:
    cases: int = 0
    crashes: int = 0
    failed_echoes: int = 0
    invalid_replies: int = 0
    replies: int = 0
    codes: dict[str, int] = field(default_factory=dict)
    rss_start: int = 0
    rss_max: int = 0
    slowest_echo_s: float = 0.0
    slowest_case: str = ""
    first_failure: str = ""

    @property
    def max_rss_growth(self) -> int:
        return max(0, self.rss_max - self.rss_start)

    def summary(self) -> str:
        codes = ", ".join(f"{k} {v}" for k, v in sorted(self.codes.items(), key=lambda kv: -kv[1]))
        return (f"cases run {self.cases}; crashes {self.crashes}; failed echoes {self.failed_echoes}; "
                f"invalid replies {self.invalid_replies}; max RSS growth {self.max_rss_growth / 2**20:.1f} MiB "
                f"(start {self.rss_start / 2**20:.1f} MiB, max {self.rss_max / 2**20:.1f} MiB); "
                f"slowest echo answer {self.slowest_echo_s * 1000:.1f} ms; replies {self.replies} ({codes})")


class FuzzHarness:
    """A ``testbed serve`` subprocess on 127.0.0.1, a raw DEALER for hostile input, a Client for echoes."""

    def __init__(self, *, echo_deadline_s: float = 1.0, rss_every: int = 25, workers: int = 1,
                 stop_on_slow_echo: bool = True):
        self.echo_deadline_s = echo_deadline_s
        # False: a late echo is counted (failed_echoes) and the run goes on; a crash always stops it
        self.stop_on_slow_echo = stop_on_slow_echo
        self.rss_every = rss_every
        self.port = free_port()
        self.endpoint = f"tcp://127.0.0.1:{self.port}"
        self.report = FuzzReport()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "testbed.cli", "serve", "--endpoint", self.endpoint, "--workers", str(workers),
             "--max-queue", "4"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.ctx = zmq.Context()
        self.fuzz_socket = self._dealer()
        from testbed.transport.client import Client

        self.client = Client(self.endpoint, context=self.ctx)
        end = time.monotonic() + 30
        while not self.client.ping(deadline_s=0.5).ok:
            if self.proc.poll() is not None or time.monotonic() > end:
                self.close()
                raise RuntimeError(f"testbed serve did not come up on {self.endpoint}")
        self.report.rss_start = self.report.rss_max = rss_bytes(self.proc.pid)

    def _dealer(self) -> zmq.Socket:
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 1000)
        sock.connect(self.endpoint)
        return sock

    def run(self, case: Case) -> None:
        """Send one case, then check liveness, an echo within the deadline and the replies; raise on failure."""
        report = self.report
        report.cases += 1
        try:
            self.fuzz_socket.send_multipart(case.frames, zmq.NOBLOCK)
        except zmq.Again:  # our own queue is full (server dropped us and we reconnect): start a fresh socket
            self.fuzz_socket.close(linger=0)
            self.fuzz_socket = self._dealer()
        start = time.monotonic()
        result = self.client.request([np.arange(4, dtype=np.int32)], op="echo", deadline_s=self.echo_deadline_s)
        elapsed = time.monotonic() - start
        if elapsed > report.slowest_echo_s:
            report.slowest_echo_s, report.slowest_case = elapsed, repr(case)
        self._check_replies(case)
        if self.proc.poll() is not None:
            report.crashes += 1
            self._fail(f"server exited with {self.proc.returncode} after {case!r}")
        if not result.ok or not (result.tensors["0"] == np.arange(4)).all():
            report.failed_echoes += 1
            if not self.stop_on_slow_echo and result.status == "timeout" and self.proc.poll() is None:
                report.first_failure = report.first_failure or f"echo {result.status} after {case!r}"
                return
            self._fail(f"echo not answered within {self.echo_deadline_s} s ({result.status} {result.error}) "
                       f"after {case!r}")
        if report.cases % self.rss_every == 0:
            report.rss_max = max(report.rss_max, rss_bytes(self.proc.pid))

    def _check_replies(self, case: Case) -> None:
        while self.fuzz_socket.poll(0):
            frames = self.fuzz_socket.recv_multipart()
            self.report.replies += 1
            try:
                if frames[0] != MAGIC or len(frames) < 2:
                    raise ProtocolError("bad_magic", "reply does not start with the magic")
                header = decode_header(frames[1])
                if header["kind"] not in REPLY_KINDS:
                    raise ProtocolError("bad_kind", f"reply kind {header['kind']!r}")
                code = header.get("code", header["kind"])
                if header["kind"] != "result" and header["kind"] != "pong" and code not in ERROR_CODES:
                    raise ProtocolError("bad_kind", f"undocumented code {code!r}")
            except ProtocolError as exc:
                self.report.invalid_replies += 1
                self._fail(f"invalid reply {frames[:2]!r} ({exc}) after {case!r}")
            self.report.codes[code] = self.report.codes.get(code, 0) + 1

    def _fail(self, message: str) -> None:
        self.report.first_failure = self.report.first_failure or message
        raise AssertionError(message)

    def close(self) -> None:
        self.report.rss_max = max(self.report.rss_max, rss_bytes(self.proc.pid)) if self.proc.poll() is None \
            else self.report.rss_max
        self.client.close()
        self.fuzz_socket.close(linger=0)
        self.ctx.term()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
