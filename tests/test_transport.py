"""Transport: codecs, header validation, round trips, hostile input, busy/expired/dedupe, timing."""

from __future__ import annotations

import json
import time
import uuid

import numpy as np
import pytest
import torch
import zmq

from testbed.transport import Client, Server
from testbed.transport.codecs import available_codecs, codec_info, decode, encode
from testbed.transport.protocol import (
    CHUNK,
    MAGIC,
    MAX_HEADER,
    MAX_TENSOR,
    ProtocolError,
    decode_header,
    now_ns,
)

DTYPES = ["float32", "float16", "float64", "uint8", "int8", "int16", "int32", "int64", "bool"]
SHAPES = [(), (0,), (3, 0, 2), (7,), (2, 3, 4)]


def make_array(dtype: str, shape: tuple, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype == "bool":
        return rng.random(shape) > 0.5
    if dtype.startswith("float"):
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(max(info.min, -1000), min(info.max, 1000), size=shape, dtype=dtype)


def roundtrip(tensor, codec):
    encoded = encode(tensor, codec)
    encoded.descriptor["chunks"] = -(-encoded.descriptor["nbytes"] // CHUNK)
    header = {"v": 1, "kind": "infer", "client": "c", "seq": 1, "deadline_ns": 0,
              "tensors": [encoded.descriptor]}
    decode_header(json.dumps(header).encode())  # the descriptor passes the receiver's checks
    wire = np.frombuffer(bytearray(encoded.payload), np.uint8)
    return decode(encoded.descriptor, wire), encoded


# -- codecs -------------------------------------------------------------------


@pytest.mark.parametrize("codec", available_codecs())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_codec_roundtrip(codec, dtype, shape):
    array = make_array(dtype, shape)
    out, encoded = roundtrip(array, codec)
    assert out.shape == array.shape and out.dtype == array.dtype
    lossy = codec_info(codec).lossy and dtype.startswith("float") and not (codec.startswith("float16") and dtype == "float16")
    if not lossy:
        np.testing.assert_array_equal(out, array)
    elif codec.startswith("float16"):
        np.testing.assert_allclose(out, array, rtol=1e-3, atol=1e-3)
    else:  # int8: error <= scale / 2, scale = range / 255
        span = (max(array.max(), 0) - min(array.min(), 0)) if array.size else 0
        assert np.abs(out.astype(np.float64) - array).max(initial=0) <= span / 255 / 2 + 1e-5


@pytest.mark.parametrize("codec", ["raw", "float16", "int8", "int8c+zstd"])
def test_bfloat16_via_torch(codec):
    tensor = torch.randn(2, 5, 3).to(torch.bfloat16)
    out, _ = roundtrip(tensor, codec)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.bfloat16 and out.shape == tensor.shape
    tolerance = 0 if codec in ("raw", "float16") else 0.05
    assert (out.float() - tensor.float()).abs().max() <= tolerance


def test_noncontiguous_and_torch_inputs():
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    out, _ = roundtrip(base.T, "raw")
    np.testing.assert_array_equal(out, base.T)
    out, _ = roundtrip(torch.arange(10, dtype=torch.int64)[::2], "raw")
    np.testing.assert_array_equal(out, np.arange(0, 10, 2))


def test_raw_encode_is_zero_copy():
    array = np.ones(1 << 20, np.float32)
    encoded = encode(array, "raw")
    assert np.shares_memory(np.frombuffer(encoded.payload, np.uint8), array)


def test_codec_sizes_on_sparse_feature_map():
    rng = np.random.default_rng(0)
    fmap = np.maximum(rng.standard_normal((1, 64, 16, 16)).astype(np.float32), 0)
    size = {c: encode(fmap, c).descriptor["nbytes"] for c in ("raw", "float16", "int8", "int8+zstd")}
    assert size["float16"] == size["raw"] // 2 and size["int8"] == size["raw"] // 4
    assert size["int8+zstd"] < size["int8"]


def test_oversize_header_refused_at_submit(client):
    with pytest.raises(ValueError):
        client.submit({f"tensor{i}": np.zeros(1) for i in range(100)})
    assert client.pending == 0


def test_unknown_codec_and_dtype_rejected():
    with pytest.raises(ValueError):
        codec_info("jpeg")
    with pytest.raises(ValueError):
        encode(np.zeros(3, np.complex64))
    with pytest.raises(ValueError):
        encode(np.array([np.inf], np.float32), "int8")


def test_compression_bomb_is_bounded():
    import zstandard

    bomb = zstandard.ZstdCompressor().compress(bytes(10_000_000))
    desc = {"name": "", "dtype": "uint8", "shape": [10], "codec": {"name": "raw+zstd", "raw_nbytes": 10},
            "nbytes": len(bomb)}
    with pytest.raises(ValueError):
        decode(desc, bomb)


# -- header validation ----------------------------------------------------------


def header_with(**fields):
    header = {"v": 1, "kind": "infer", "client": "c", "seq": 1, "deadline_ns": 0, "tensors": []}
    header.update(fields)
    return json.dumps(header).encode()


def tensor(**fields):
    desc = {"name": "x", "dtype": "float32", "shape": [2], "codec": {"name": "raw"}, "nbytes": 8, "chunks": 1}
    desc.update(fields)
    return desc


@pytest.mark.parametrize("raw, code", [
    (b"\xff\xfe", "malformed_header"),
    (b"[1, 2]", "malformed_header"),
    (b"x" * (MAX_HEADER + 1), "header_too_large"),
    (header_with(v=2), "unsupported_version"),
    (header_with(seq=-1), "malformed_header"),
    (header_with(kind="launch"), "malformed_header"),
    (header_with(tensors=[tensor(dtype="complex64")]), "bad_dtype"),
    (header_with(tensors=[tensor(dtype="object")]), "bad_dtype"),
    (header_with(tensors=[tensor(shape=[-1])]), "bad_shape"),
    (header_with(tensors=[tensor(shape=[1] * 9)]), "bad_shape"),
    (header_with(tensors=[tensor(shape=[2.0])]), "bad_shape"),
    (header_with(tensors=[tensor(shape=[2**62, 2**62, 2**62])]), "too_large"),
    (header_with(tensors=[tensor(nbytes=7)]), "size_mismatch"),
    (header_with(tensors=[tensor(nbytes=MAX_TENSOR + 1)]), "too_large"),
    (header_with(tensors=[tensor(chunks=0)]), "size_mismatch"),
    (header_with(tensors=[tensor(chunks=5)]), "size_mismatch"),
    (header_with(tensors=[tensor(codec={"name": "jpeg"})]), "bad_codec"),
    (header_with(tensors=[tensor(dtype="int32", codec={"name": "int8", "scale": 1.0, "zero_point": 0})]), "bad_codec"),
    (header_with(tensors=[tensor(codec={"name": "int8", "scale": -1, "zero_point": 0}, nbytes=2)]), "bad_codec"),
    (header_with(tensors=[tensor(codec={"name": "raw+zstd", "raw_nbytes": 99})]), "size_mismatch"),
    (header_with(tensors=[{"dtype": "uint8", "shape": [], "nbytes": 1, "chunks": 1}] * 65), "too_large"),
])
def test_header_validation(raw, code):
    with pytest.raises(ProtocolError) as info:
        decode_header(raw)
    assert info.value.code == code


# -- client/server over loopback -----------------------------------------------


@pytest.fixture
def server():
    with Server("tcp://127.0.0.1:*", workers=2, max_queue=4, heartbeat_ivl=0.2, heartbeat_timeout=1.0) as srv:
        yield srv


@pytest.fixture
def client(server):
    with Client(server.bound_endpoint, heartbeat_ivl=0.2, heartbeat_timeout=1.0) as c:
        yield c


@pytest.mark.parametrize("dtype", DTYPES + ["bfloat16"])
def test_roundtrip_all_dtypes_and_shapes(client, dtype):
    if dtype == "bfloat16":
        tensors = {f"t{i}": torch.randn(s).to(torch.bfloat16) for i, s in enumerate(SHAPES)}
    else:
        tensors = {f"t{i}": make_array(dtype, s, seed=i) for i, s in enumerate(SHAPES)}
        tensors["strided"] = make_array(dtype, (4, 6))[:, ::2]
    result = client.request(tensors, op="echo", deadline_s=5)
    assert result.ok, result.error
    assert list(result.tensors) == list(tensors)
    for name, value in tensors.items():
        out = result.tensors[name]
        if isinstance(value, torch.Tensor):
            assert out.dtype == torch.bfloat16 and torch.equal(out, value)
            continue
        assert out.dtype == value.dtype and out.shape == value.shape
        np.testing.assert_array_equal(out, value)
        assert out.flags.writeable and out.ctypes.data % 16 == 0


@pytest.mark.parametrize("codec", ["float16", "int8", "int8c+lz4", "raw+zstd"])
def test_roundtrip_codecs_both_directions(client, codec):
    x = np.maximum(np.random.default_rng(1).standard_normal((1, 8, 16, 16)).astype(np.float32), 0)
    result = client.request({"x": x}, op="echo", deadline_s=5, codec=codec, reply_codec=codec)
    assert result.ok, result.error
    assert np.abs(result.tensors["x"] - x).max() < 0.05
    if codec != "raw+zstd":
        assert result.bytes_up < x.nbytes


def test_large_tensor_is_chunked_and_exact(client):
    x = np.random.default_rng(2).standard_normal(3_000_000).astype(np.float32)  # 12 MB, 46 chunks
    result = client.request([x], op="echo", deadline_s=10)
    assert result.ok and np.array_equal(result.tensors["0"], x)
    assert result.bytes_up >= x.nbytes and result.bytes_down >= x.nbytes


def test_timestamps_are_ordered_and_sum_up(client):
    result = client.request([np.ones(1000, np.float32)], op="sleep", meta={"sleep_s": 0.05}, deadline_s=2)
    t = result.timestamps
    order = ["t_submit", "t_send", "t_rx", "t_dec1", "t_tail0", "t_tail1", "t_tx", "t_recv"]
    assert [t[k] for k in order] == sorted(t[k] for k in order)
    assert result.info["compute_s"] >= 0.05 and result.info["queue_s"] >= 0
    parts = (t["t_rx"] - t["t_send"]) + (t["t_tx"] - t["t_rx"]) + (t["t_recv"] - t["t_tx"])
    assert parts == t["t_recv"] - t["t_send"]


def test_pipelined_requests_matched_by_seq(client):
    seqs = {client.submit([np.full(5, i, np.int32)], op="echo", deadline_s=5): i for i in range(30)}
    results = []
    end = time.monotonic() + 10
    while len(results) < len(seqs) and time.monotonic() < end:
        results += client.poll(1.0)
    assert sorted(r.seq for r in results) == sorted(seqs)
    for r in results:
        assert r.status in ("ok", "busy")
        if r.ok:
            assert (r.tensors["0"] == seqs[r.seq]).all()


def test_busy_when_queue_full():
    with Server("tcp://127.0.0.1:*", workers=1, max_queue=1) as srv, Client(srv.bound_endpoint) as c:
        seqs = [c.submit([np.ones(2)], op="sleep", meta={"sleep_s": 0.3}, deadline_s=3)]
        assert c.poll(0.1) == []  # the worker has taken the first job
        seqs += [c.submit([np.ones(2)], op="sleep", meta={"sleep_s": 0.3}, deadline_s=3) for _ in range(3)]
        results = {}
        while len(results) < len(seqs):
            results.update((r.seq, r) for r in c.poll(3))
        statuses = [results[s].status for s in seqs]
        assert statuses[:2] == ["ok", "ok"] and statuses.count("busy") == 2, statuses
        assert srv.stats.busy == 2


def test_deadline_timeout_then_late_reply_counted_not_delivered(client, server):
    result = client.request([np.ones(4)], op="sleep", meta={"sleep_s": 0.4}, deadline_s=0.15)
    assert result.status == "timeout"
    assert 0.15 <= result.latency_s < 0.3
    assert client.poll(0.6) == []  # the late reply is dropped ...
    assert client.late_replies == 1  # ... and counted
    assert client.request([np.ones(2)], deadline_s=2).ok


def test_request_expires_in_queue():
    with Server("tcp://127.0.0.1:*", workers=1, max_queue=4) as srv, Client(srv.bound_endpoint) as c:
        first = c.submit([np.ones(2)], op="sleep", meta={"sleep_s": 0.4}, deadline_s=2)
        second = c.submit([np.ones(2)], op="sleep", meta={"sleep_s": 0}, deadline_s=0.2)
        results = {}
        while len(results) < 2:
            results.update((r.seq, r) for r in c.poll(2))
        assert results[first].ok and results[second].status == "timeout"
        time.sleep(0.1)
        c.poll(0.1)
        assert srv.stats.expired == 1 and c.late_replies == 1


def test_inline_echo_is_not_queued_behind_slow_jobs():
    with Server("tcp://127.0.0.1:*", workers=1, max_queue=2) as srv, Client(srv.bound_endpoint) as c:
        slow = c.submit([np.ones(2)], op="sleep", meta={"sleep_s": 0.5}, deadline_s=3)
        queued = c.submit([np.ones(2)], op="sleep", meta={"sleep_s": 0}, deadline_s=3)
        start = time.monotonic()
        echo = c.request([np.arange(3)], op="echo", deadline_s=2)  # worker busy, job queued: still answered
        assert echo.ok and echo.info["worker"] == -1 and time.monotonic() - start < 0.3
        assert (echo.tensors["0"] == np.arange(3)).all()
        results = {}
        while len(results) < 2:
            results.update((r.seq, r) for r in c.poll(3))
        assert results[slow].ok and results[queued].ok
        # dedupe and the reply cache still apply to inline ops
        header_seq = echo.seq
        assert header_seq in c._resolved and srv.stats.results >= 3


def test_inline_ops_configurable():
    with Server("tcp://127.0.0.1:*", inline_ops=[]) as srv, Client(srv.bound_endpoint) as c:
        result = c.request([np.ones(2)], op="echo", deadline_s=2)
        assert result.ok and result.info["worker"] >= 0


def test_chunk_for_link():
    from testbed.transport.protocol import CHUNK_LIMIT, MIN_CHUNK, chunk_for_link

    assert chunk_for_link(2e6, 3.0) == 128 * 1024  # 128 KiB at 2 Mbit/s: 0.5 s, 1/6 of the timeout
    assert chunk_for_link(1e9, 3.0) == CHUNK_LIMIT
    assert chunk_for_link(1e3, 0.1) == MIN_CHUNK
    rate, timeout = 10e6, 3.0
    assert chunk_for_link(rate, timeout) * 8 / rate * 4 <= timeout


@pytest.mark.parametrize("server_chunk,client_chunk", [(4 << 20, 4 << 20), (CHUNK, 4 << 20), (4 << 20, CHUNK)])
def test_big_chunks_negotiated(server_chunk, client_chunk):
    """Frames above 256 KiB only go to a peer that said it accepts them (else MAXMSGSIZE drops the link)."""
    payload = np.random.default_rng(1).integers(0, 255, 9 << 20, np.uint8)
    with Server("tcp://127.0.0.1:*", chunk=server_chunk) as srv, \
            Client(srv.bound_endpoint, chunk=client_chunk) as c:
        for _ in range(2):  # the first reply tells the client the server's max_chunk
            result = c.request([payload], op="echo", deadline_s=10)
            assert result.ok, result.error
            assert (result.tensors["0"] == payload).all() and result.tensors["0"].flags.writeable
        assert c.disconnects == 0 and c.resends == 0 and srv.stats.malformed == 0
        assert c._peer_max_chunk == max(server_chunk, CHUNK)


def test_max_chunk_header_validated():
    header = {"v": 1, "kind": "infer", "client": "c", "seq": 1, "deadline_ns": 0, "tensors": [], "max_chunk": 10}
    with pytest.raises(ProtocolError, match="max_chunk"):
        decode_header(json.dumps(header).encode())
    big = {"name": "0", "dtype": "uint8", "shape": [8 << 20], "nbytes": 8 << 20, "chunks": 2}
    with pytest.raises(ProtocolError, match="chunks"):  # 4 MiB frames exceed the default receiver limit
        decode_header(json.dumps(dict(header, max_chunk=CHUNK, tensors=[big])).encode())
    assert decode_header(json.dumps(dict(header, max_chunk=CHUNK, tensors=[big])).encode(), 4 << 20)


def test_chunk_out_of_range_refused():
    with pytest.raises(ValueError, match="chunk"):
        Client("tcp://127.0.0.1:9", chunk=100)
    with pytest.raises(ValueError, match="chunk"):
        Server("tcp://127.0.0.1:*", chunk=1 << 30)


def test_server_absent_client_times_out_and_closes_fast():
    start = time.monotonic()
    with Client("tcp://127.0.0.1:9", heartbeat_timeout=0.5) as c:
        result = c.request([np.ones(3)], deadline_s=0.3)
    assert result.status == "timeout" and result.attempts == 0
    assert time.monotonic() - start < 1.0


def test_handler_exception_becomes_error_reply():
    def broken(request):
        raise RuntimeError("model exploded")

    with Server("tcp://127.0.0.1:*", handlers={"broken": broken, "echo": lambda r: r.tensors}) as srv:
        with Client(srv.bound_endpoint) as c:
            result = c.request([np.ones(2)], op="broken", deadline_s=2)
            assert result.status == "error" and "model exploded" in result.error
            assert c.request([np.ones(2)], op="echo", deadline_s=2).ok
            assert c.request([], op="missing", deadline_s=2).error.startswith("unknown_op")


# -- hostile peers -------------------------------------------------------------------


def raw_dealer(ctx, endpoint):
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 2000)
    sock.connect(endpoint)
    return sock


def infer_header(**fields):
    header = {"v": 1, "kind": "infer", "client": uuid.uuid4().hex, "seq": 1, "attempt": 1, "op": "echo",
              "deadline_ns": now_ns() + 5_000_000_000, "tensors": []}
    header.update(fields)
    return json.dumps(header).encode()


MALFORMED = {
    "bad_magic": [b"NOPE", b"{}"],
    "unsupported_version": [b"SPLT\x07", b"{}"],
    "malformed_header": [MAGIC, b"\xff\xfe not json"],
    "header_too_large": [MAGIC, b" " * 5000],
    "bad_dtype": [MAGIC, infer_header(tensors=[tensor(dtype="object")]), b"\0" * 8],
    "too_large": [MAGIC, infer_header(tensors=[tensor(shape=[2**40, 2**40])])],
    "size_mismatch": [MAGIC, infer_header(tensors=[tensor(nbytes=8)]), b"\0" * 12],
    "frame_count": [MAGIC, infer_header(tensors=[tensor(nbytes=8)]), b"\0" * 8, b"extra"],
}


@pytest.mark.parametrize("code", list(MALFORMED))
def test_malformed_messages_get_error_reply_and_server_keeps_serving(server, client, code):
    ctx = zmq.Context()
    try:
        sock = raw_dealer(ctx, server.bound_endpoint)
        sock.send_multipart(MALFORMED[code])
        reply = sock.recv_multipart()
        assert reply[0] == MAGIC
        header = json.loads(reply[1])
        assert header["kind"] == "error" and header["code"] == code
        sock.close()
    finally:
        ctx.term()
    assert client.request([np.arange(3)], deadline_s=2).ok
    assert server.stats.malformed >= 1


def test_missing_chunk_frame_rejected(server, client):
    ctx = zmq.Context()
    try:
        sock = raw_dealer(ctx, server.bound_endpoint)
        sock.send_multipart([MAGIC, infer_header(tensors=[tensor(nbytes=8)])])
        header = json.loads(sock.recv_multipart()[1])
        assert header["code"] == "frame_count"
        sock.close()
    finally:
        ctx.term()
    assert client.request([np.arange(3)], deadline_s=2).ok


def test_oversize_frame_disconnects_only_that_peer(server, client):
    ctx = zmq.Context()
    try:
        sock = raw_dealer(ctx, server.bound_endpoint)
        sock.setsockopt(zmq.RCVTIMEO, 300)
        sock.send_multipart([MAGIC, infer_header(tensors=[tensor(shape=[200_000], nbytes=800_000)]),
                             b"\0" * 800_000])  # one frame > MAXMSGSIZE: libzmq drops the connection
        with pytest.raises(zmq.Again):
            sock.recv_multipart()
        sock.close()
    finally:
        ctx.term()
    assert client.request([np.arange(3)], deadline_s=2).ok


def test_duplicate_seq_computed_once_and_answered_from_cache(server):
    ctx = zmq.Context()
    try:
        sock = raw_dealer(ctx, server.bound_endpoint)
        client_id = uuid.uuid4().hex
        body = np.arange(2, dtype=np.float32).tobytes()
        message = [MAGIC, infer_header(client=client_id, seq=7, op="sleep", meta={"sleep_s": 0.2},
                                       tensors=[tensor(nbytes=8)]), body]
        sock.send_multipart(message)
        sock.send_multipart(message)  # in progress: dropped, reply goes to the newest route
        first = json.loads(sock.recv_multipart()[1])
        sock.send_multipart(message)  # done: answered from the cache without recomputing
        again = json.loads(sock.recv_multipart()[1])
        assert first["kind"] == again["kind"] == "result"
        assert first["cached"] is False and again["cached"] is True
        assert server.stats.duplicates_in_progress == 1 and server.stats.cached_replies == 1
        assert server.stats.results == 2  # one computation, one cached resend
        sock.close()
    finally:
        ctx.term()


def test_past_deadline_request_answered_expired(server):
    ctx = zmq.Context()
    try:
        sock = raw_dealer(ctx, server.bound_endpoint)
        sock.send_multipart([MAGIC, infer_header(deadline_ns=now_ns() - 1)])
        assert json.loads(sock.recv_multipart()[1])["kind"] == "expired"
        sock.close()
    finally:
        ctx.term()
