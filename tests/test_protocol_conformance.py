"""Conformance: one test per row of the validation table in docs/protocol.md, against a real server.

The table is read from the document, so a row added there without a case here fails
(``test_every_row_has_a_case``), and a case whose row was removed fails too. Each case
sends raw frames from a DEALER to a Server on loopback and checks the reply's code,
then that the server still answers a normal request.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import zmq

from testbed.transport import Client, Server
from testbed.transport.protocol import ERROR_CODES, MAGIC, MAX_TENSOR, now_ns

DOC = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"
ROW = re.compile(r"^\| (\d+) \| `([a-z0-9-]+)` \| (.+?) \| (.+?) \|$")


def doc_rows() -> dict[str, tuple[int, str]]:
    """Validation table rows: id -> (number, code cell)."""
    text = DOC.read_text()
    section = text[text.index("## Validation"):text.index("## Error codes")]
    rows = {}
    for line in section.splitlines():
        match = ROW.match(line)
        if match:
            rows[match.group(2)] = (int(match.group(1)), match.group(4))
    return rows


ROWS = doc_rows()


def row_code(row_id: str) -> str | None:
    cell = ROWS[row_id][1]
    match = re.match(r"`([a-z_]+)`", cell)
    return match.group(1) if match else None


def header(**fields) -> dict:
    base = {"v": 1, "kind": "infer", "client": uuid.uuid4().hex, "seq": 1, "attempt": 1, "op": "echo",
            "deadline_ns": now_ns() + 5_000_000_000, "tensors": []}
    base.update(fields)
    return base


def desc(**fields) -> dict:
    base = {"name": "x", "dtype": "float32", "shape": [2], "codec": {"name": "raw"}, "nbytes": 8, "chunks": 1}
    base.update(fields)
    return base


def msg(head: dict | bytes, *payload: bytes) -> list[bytes]:
    raw = head if isinstance(head, bytes) else json.dumps(head, separators=(",", ":")).encode()
    return [MAGIC, raw, *payload]


X = np.arange(2, dtype=np.float32).tobytes()


def simple_cases() -> dict[str, list[bytes]]:
    """Row id -> frames whose reply must carry the row's code (built per test: deadlines are absolute)."""
    return {
        "magic": [b"NOPE!", b"{}"],
        "version-byte": [b"SPLT\x02", b"{}"],
        "header-present": [MAGIC],
        "header-size": [MAGIC, b" " * 4097],
        "utf8": [MAGIC, b'{"v": 1, "x": "\xff"}'],
        "json": [MAGIC, json.dumps(header()).encode()[:-1] + b',"nan": NaN}'],
        "depth": [MAGIC, json.dumps(header()).encode()[:-1] + b',"ignored":' + b"[" * 1500 + b"]" * 1500 + b"}"],
        "keys": msg(header(meta={f"k{i}": i for i in range(65)})),
        "object": [MAGIC, b"[1, 2, 3]"],
        "v": msg(header(v=2)),
        "kind": msg(header(kind="launch")),
        "client": msg(header(client="c" * 65)),
        "seq": msg(header(seq=2**63)),
        "attempt": msg(header(attempt=-1)),
        "op": msg(header(op=["echo"])),
        "deadline": msg(header(deadline_ns=2**64)),
        "budget": msg(header(budget_ns=-5)),
        "reply-codec": msg(header(reply_codec="jpeg")),
        "max-chunk": msg(header(max_chunk=1024)),
        "objects": msg(header(meta=[1, 2])),
        "tensors-list": msg(header(tensors={"x": 1})),
        "tensor-count": msg(header(tensors=[{"dtype": "uint8", "shape": [], "nbytes": 1, "chunks": 1}] * 65)),
        "descriptor": msg(header(tensors=["x"])),
        "name": msg(header(tensors=[desc(name=7)]), X),
        "dtype": msg(header(tensors=[desc(dtype="complex64")]), X),
        "shape": msg(header(tensors=[desc(shape=[2, -1])]), X),
        "decoded-size": msg(header(tensors=[desc(shape=[2**40, 2**40])]), X),
        "nbytes": msg(header(tensors=[desc(nbytes=-8)]), X),
        "nbytes-limit": msg(header(tensors=[desc(nbytes=MAX_TENSOR + 1)]), X),
        "chunks": msg(header(tensors=[{k: v for k, v in desc().items() if k != "chunks"}]), X),
        "chunks-range": msg(header(tensors=[desc(chunks=2)]), X),
        "codec": msg(header(tensors=[desc(dtype="int32", codec={"name": "int8", "scale": 1.0, "zero_point": 0},
                                          nbytes=2)]), b"\0\0"),
        "codec-size": msg(header(tensors=[desc(nbytes=12)]), X + b"\0" * 4),
        "unique-names": msg(header(tensors=[desc(), desc()]), X, X),
        "total-size": msg(header(tensors=[desc(name=f"t{i}", dtype="uint8", shape=[MAX_TENSOR], nbytes=MAX_TENSOR,
                                               chunks=MAX_TENSOR // 262144) for i in range(3)])),
        "frame-missing": msg(header(tensors=[desc()])),
        "frame-empty": msg(header(tensors=[desc(shape=[2048], nbytes=8192, chunks=2)]), b"", b"\0" * 8192),
        "frame-overrun": msg(header(tensors=[desc(shape=[2048], nbytes=8192, chunks=2)]), b"\0" * 5000, b"\0" * 5000),
        "frame-short": msg(header(tensors=[desc(shape=[2048], nbytes=8192, chunks=2)]), b"\0" * 100, b"\0" * 100),
        "frame-extra": msg(header(tensors=[desc()]), X, b"extra"),
        "request-kind": msg(header(kind="result")),
        "unknown-op": msg(header(op="nonexistent")),
        "expired-arrival": msg(header(deadline_ns=now_ns() - 1)),
        "payload": msg(header(tensors=[desc(codec={"name": "raw+zstd", "raw_nbytes": 8}, nbytes=8)]), b"notzstd!"),
    }


SIMPLE_CASES = list(simple_cases())


def dealer(ctx: zmq.Context, endpoint: str, timeout_ms: int = 3000) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, timeout_ms)
    sock.connect(endpoint)
    return sock


@pytest.fixture(scope="module")
def server():
    def broken(request):
        raise ValueError("model exploded")  # ValueError too: handler_error, not bad_request

    handlers = {"echo": lambda r: r.tensors, "broken": broken,
                "sleep": __import__("testbed.transport.server", fromlist=["sleep_echo"]).sleep_echo}
    with Server("tcp://127.0.0.1:*", handlers=handlers, workers=1, max_queue=2) as srv:
        yield srv


@pytest.fixture
def sock(server):
    ctx = zmq.Context()
    socket = dealer(ctx, server.bound_endpoint)
    yield socket
    socket.close(linger=0)
    ctx.term()


def reply_of(sock: zmq.Socket, frames: list[bytes]) -> dict:
    sock.send_multipart(frames)
    reply = sock.recv_multipart()
    assert reply[0] == MAGIC
    return json.loads(reply[1])


def still_serving(endpoint: str) -> None:
    with Client(endpoint) as client:
        result = client.request([np.arange(3)], op="echo", deadline_s=3)
        assert result.ok, result.error


def test_every_row_has_a_case():
    cases = set(SIMPLE_CASES) | set(SPECIAL_CASES)
    assert set(ROWS) == cases, f"rows without a case: {set(ROWS) - cases}; cases without a row: {cases - set(ROWS)}"
    assert [n for n, _ in sorted(ROWS.values())] == list(range(1, len(ROWS) + 1)), "rows are numbered 1..N"
    for row_id in ROWS:
        code = row_code(row_id)
        assert code is None or code in ERROR_CODES, (row_id, code)
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", DOC.read_text(), re.M))
    assert set(ERROR_CODES) <= documented, f"codes missing from the error code table: {set(ERROR_CODES) - documented}"


@pytest.mark.parametrize("row_id", sorted(SIMPLE_CASES, key=lambda r: ROWS.get(r, (0,))[0]))
def test_row(row_id, server, sock):
    assert row_id in ROWS, f"{row_id} is not a row of the validation table"
    reply = reply_of(sock, simple_cases()[row_id])
    code = row_code(row_id)
    assert reply.get("code") == code, (row_id, reply)
    expected_kind = code if code in ("busy", "expired") else "error"
    assert reply["kind"] == expected_kind
    still_serving(server.bound_endpoint)


# -- rows that need timing, state or a server of their own ------------------------------------


def case_seq_reused(server, sock):
    client = uuid.uuid4().hex
    first = reply_of(sock, msg(header(client=client, seq=5, meta={"a": 1}, tensors=[desc()]), X))
    assert first["kind"] == "result" and first["cached"] is False
    again = reply_of(sock, msg(header(client=client, seq=5, attempt=2, meta={"a": 1}, tensors=[desc()]), X))
    assert again["kind"] == "result" and again["cached"] is True  # a true resend: the cached reply
    return reply_of(sock, msg(header(client=client, seq=5, meta={"a": 2}, tensors=[desc()]), X))


def case_busy(server, sock):
    for seq in (1, 2, 3):  # one runs, two wait: the queue of 2 is full
        sock.send_multipart(msg(header(seq=seq, client="busy-test", op="sleep", meta={"sleep_s": 0.4})))
    time.sleep(0.1)
    reply = reply_of(sock, msg(header(seq=4, client="busy-test", op="sleep", meta={"sleep_s": 0.4})))
    for _ in range(3):
        sock.recv_multipart()
    return reply


def case_expired_queue(server, sock):
    sock.send_multipart(msg(header(seq=1, op="sleep", meta={"sleep_s": 0.3})))
    reply = reply_of(sock, msg(header(seq=2, op="sleep", deadline_ns=now_ns() + 100_000_000)))
    if reply["seq"] == 1:
        reply = json.loads(sock.recv_multipart()[1])
    else:
        sock.recv_multipart()
    assert "queue" in reply["message"]
    return reply


def case_expired_running(server, sock):
    reply = reply_of(sock, msg(header(op="sleep", meta={"sleep_s": 0.3}, deadline_ns=now_ns() + 150_000_000,
                                      tensors=[desc()]), X))
    assert "while the handler ran" in reply["message"] and reply["tensors"] == []
    assert reply["info"]["compute_s"] >= 0.3
    return reply


def case_handler(server, sock):
    return reply_of(sock, msg(header(op="broken", tensors=[desc()]), X))


def case_reply_size(server, sock):
    # the request of issue 12: 48 named scalars (request header ~3.3 kB) whose echo header exceeds 4096 bytes
    tensors = [{"name": f"scalar_{i:02d}", "dtype": "float32", "shape": [], "nbytes": 4, "chunks": 1}
               for i in range(48)]
    head = json.dumps(header(tensors=tensors), separators=(",", ":")).encode()
    assert len(head) <= 4096
    return reply_of(sock, [MAGIC, head] + [b"\0\0\x80?"] * 48)


def case_shutdown(server, sock):
    ctx = zmq.Context()
    own_sock = None
    try:
        with Server("tcp://127.0.0.1:*", workers=1, max_queue=4) as own:
            own_sock = dealer(ctx, own.bound_endpoint)
            own_sock.send_multipart(msg(header(seq=1, op="sleep", meta={"sleep_s": 0.5})))
            own_sock.send_multipart(msg(header(seq=2, op="sleep", meta={"sleep_s": 0.5})))
            time.sleep(0.2)
            own.stop()
            replies = {h["seq"]: h for h in (json.loads(own_sock.recv_multipart()[1]) for _ in range(2))}
    finally:
        if own_sock is not None:
            own_sock.close(linger=0)
        ctx.term()
    assert replies[1]["kind"] == "result"
    return replies[2]


def case_internal(server, sock):
    ctx = zmq.Context()
    own_sock = None
    try:
        with Server("tcp://127.0.0.1:*") as own:
            def bug(*args):  # stands in for a server bug that validation did not foresee
                raise RuntimeError("bug")

            real = own._handle
            own._handle = bug
            own_sock = dealer(ctx, own.bound_endpoint)
            reply = reply_of(own_sock, msg(header(tensors=[desc()]), X))
            own._handle = real
            assert own.stats.internal_errors == 1
            still_serving(own.bound_endpoint)
    finally:
        if own_sock is not None:
            own_sock.close(linger=0)
        ctx.term()
    return reply


def case_frame_size(server, sock):
    sock.setsockopt(zmq.RCVTIMEO, 500)
    sock.send_multipart([MAGIC, b" " * (400 * 1024)])  # over MAXMSGSIZE: libzmq drops the connection
    with pytest.raises(zmq.Again):
        sock.recv_multipart()
    return None


SPECIAL_CASES = {
    "seq-reused": case_seq_reused, "busy": case_busy, "expired-queue": case_expired_queue,
    "expired-running": case_expired_running, "handler": case_handler, "reply-size": case_reply_size,
    "shutdown": case_shutdown, "internal": case_internal, "frame-size": case_frame_size,
}


@pytest.mark.parametrize("row_id", sorted(SPECIAL_CASES, key=lambda r: ROWS.get(r, (0,))[0]))
def test_special_row(row_id, server, sock):
    assert row_id in ROWS, f"{row_id} is not a row of the validation table"
    reply = SPECIAL_CASES[row_id](server, sock)
    code = row_code(row_id)
    if code is None:
        assert reply is None
    else:
        assert reply["code"] == code, (row_id, reply)
        assert reply["kind"] == (code if code in ("busy", "expired") else "error")
    still_serving(server.bound_endpoint)
