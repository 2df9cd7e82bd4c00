"""Device-side client: DEALER socket, request ids, deadlines, resends and exactly-once results.

Every submitted request is resolved exactly once, as ``ok``, ``timeout``, ``error``,
``busy``, ``expired`` or ``cancelled``; a reply that arrives after its request was
resolved is dropped and counted, never delivered. A Client is not thread-safe: use
it from one thread (ZeroMQ sockets are single-threaded).
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from testbed.transport.codecs import Encoded, decode, encode
from testbed.transport.keys import CurveKeys
from testbed.transport.protocol import (
    CHUNK,
    MAX_CHUNK,
    MAX_SEQ,
    VERSION,
    ProtocolError,
    check_chunk,
    now_ns,
    receive_message,
    send_message,
)
from testbed.transport.sockets import MONITOR_EVENTS, configure

log = logging.getLogger("testbed.transport.client")

STATUS_OF_KIND = {"result": "ok", "pong": "ok", "error": "error", "busy": "busy", "expired": "expired"}
RESOLVED_MEMORY = 4096  # resolved seqs remembered to tell late replies from strays
RECEIVE_BATCH = 256  # replies read per wake-up: a flooding server cannot keep deadlines from being checked


@dataclass
class Result:
    """The one outcome of one request. Timestamps are ``time.monotonic_ns()`` values.

    ``timestamps`` keys: ``t_submit`` (submit called), ``t_send`` (the answered attempt
    left this process), server ``t_rx`` (request received), ``t_dec1`` (tensors decoded),
    ``t_tail0``/``t_tail1`` (handler ran), ``t_tx`` (reply sent), and ``t_recv`` (reply
    received here). Missing keys mean that stage did not happen.
    """

    seq: int
    status: str  # ok | timeout | error | busy | expired | cancelled
    op: str = ""
    tensors: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # server: queue_s, compute_s, decode_s, encode_s, cached, ...
    timestamps: dict[str, int] = field(default_factory=dict)
    bytes_up: int = 0  # request payload bytes on the wire (last attempt)
    bytes_down: int = 0  # reply bytes on the wire
    encode_s: float = 0.0
    decode_s: float = 0.0
    attempts: int = 0  # how many times the request was handed to the socket
    error: str = ""  # "code: message" for error/busy/expired/timeout

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def latency_s(self) -> float:
        """Submit-to-outcome time (what the caller waited)."""
        end = self.timestamps.get("t_recv") or self.timestamps.get("t_resolved", 0)
        return (end - self.timestamps["t_submit"]) / 1e9

    @property
    def tensor_list(self) -> list[Any]:
        return list(self.tensors.values())


@dataclass
class _Pending:
    seq: int
    op: str
    header: dict
    encoded: list[Encoded]  # holds the payload buffers alive (and unchanged) until resolved
    deadline_ns: int
    t_submit: int
    encode_s: float
    bytes_up: int
    attempts: int = 0
    sent: bool = False
    t_send: int = 0


class Client:
    """Send tensors to a :class:`~testbed.transport.server.Server` and get results back.

    ``heartbeat_ivl``/``heartbeat_timeout`` bound how long a dead link or peer goes
    unnoticed; in-flight requests lost with a connection are resent (same seq, next
    attempt) when it comes back, and the server answers a duplicate from its cache.
    ``curve`` is a key directory (see ``testbed keys``) or :class:`CurveKeys`.

    ``chunk`` is the payload frame size wanted for requests (keep one chunk's transfer
    at the slowest rate under ``heartbeat_timeout / 4``: see ``chunk_for_link``). Frames
    above the 256 KiB default are only used once a reply has shown that the server
    accepts them (its ``max_chunk``); ``max_chunk`` (default ``max(chunk, 256 KiB)``)
    is the largest reply frame this client accepts, advertised in every request.
    """

    def __init__(self, endpoint: str, *, heartbeat_ivl: float = 0.5, heartbeat_timeout: float = 3.0,
                 curve: str | Path | CurveKeys | None = None, hwm: int = 8, reconnect_ivl: float = 0.1,
                 reconnect_ivl_max: float = 2.0, reset_after_timeouts: int = 2, chunk: int = CHUNK,
                 max_chunk: int | None = None, sndbuf: int = -1, rcvbuf: int = -1,
                 context: zmq.Context | None = None):
        self.endpoint = endpoint
        self.client_id = uuid.uuid4().hex
        self.heartbeat_ivl = heartbeat_ivl
        self.heartbeat_timeout = heartbeat_timeout
        self.hwm = hwm
        self.reconnect_ivl = reconnect_ivl
        self.reconnect_ivl_max = reconnect_ivl_max
        self.reset_after_timeouts = reset_after_timeouts
        self.chunk = check_chunk(chunk)
        self.max_chunk = check_chunk(max(chunk, MAX_CHUNK) if max_chunk is None else max_chunk, "max_chunk")
        self.sndbuf, self.rcvbuf = sndbuf, rcvbuf
        self._peer_max_chunk = MAX_CHUNK  # what the server accepts: protocol default until a reply says more
        self.curve = CurveKeys.from_dir(curve) if isinstance(curve, (str, Path)) else curve
        self._own_context = context is None
        self._ctx = context or zmq.Context()
        self._next_seq = 1
        self._pending: OrderedDict[int, _Pending] = OrderedDict()
        self._ready: OrderedDict[int, Result] = OrderedDict()
        self._resolved: OrderedDict[int, str] = OrderedDict()
        self._consecutive_timeouts = 0
        self._handshakes = 0
        self._closed = False
        # counters
        self.late_replies = 0  # replies to requests already resolved as timeout/cancelled
        self.duplicates_dropped = 0  # second replies to requests already answered
        self.stray_replies = 0  # replies for another client id or an unknown seq
        self.malformed_replies = 0
        self.reconnects = 0
        self.disconnects = 0
        self.resends = 0
        self.socket_resets = 0
        self._sock: zmq.Socket | None = None
        self._monitor: zmq.Socket | None = None
        self._open_socket()

    # -- socket lifecycle ---------------------------------------------------

    def _open_socket(self) -> None:
        sock = self._ctx.socket(zmq.DEALER)
        configure(sock, heartbeat_ivl=self.heartbeat_ivl, heartbeat_timeout=self.heartbeat_timeout,
                  hwm=self.hwm, linger_s=0, max_chunk=self.max_chunk, sndbuf=self.sndbuf, rcvbuf=self.rcvbuf)
        sock.setsockopt(zmq.IMMEDIATE, 1)  # no queue for an absent peer: fail fast, nothing stale
        sock.setsockopt(zmq.RECONNECT_IVL, int(self.reconnect_ivl * 1000))
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, int(self.reconnect_ivl_max * 1000))
        sock.setsockopt(zmq.CONNECT_TIMEOUT, 2000)
        sock.setsockopt(zmq.HANDSHAKE_IVL, 5000)
        if self.curve is not None:
            sock.curve_serverkey = self.curve.server_public
            sock.curve_publickey = self.curve.public
            sock.curve_secretkey = self.curve.secret
        self._monitor = sock.get_monitor_socket(MONITOR_EVENTS)
        sock.connect(self.endpoint)
        self._sock = sock
        self._poller = zmq.Poller()
        self._poller.register(self._monitor, zmq.POLLIN)

    def _close_socket(self) -> None:
        if self._sock is None:
            return
        try:
            self._sock.disable_monitor()
        except zmq.ZMQError:
            pass
        self._monitor.close(linger=0)
        self._sock.close(linger=0)
        self._sock = self._monitor = None

    def _reset_socket(self) -> None:
        """Fresh socket: flushes whatever a wedged connection still queues; in-flight requests resend."""
        log.info("client %s: re-creating socket to %s", self.client_id[:8], self.endpoint)
        self._close_socket()
        self.socket_resets += 1
        self._peer_max_chunk = MAX_CHUNK
        for pending in self._pending.values():
            pending.sent = False
        self._open_socket()

    def close(self) -> None:
        """Resolve what is pending as ``cancelled`` (discarded) and release sockets; never blocks."""
        if self._closed:
            return
        for seq in list(self._pending):
            self._resolve(seq, Result(seq, "cancelled", error="cancelled: client closed"))
        self._close_socket()
        if self._own_context:
            self._ctx.term()
        self._closed = True

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def stats(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in (
            "late_replies", "duplicates_dropped", "stray_replies", "malformed_replies",
            "reconnects", "disconnects", "resends", "socket_resets")}

    # -- submitting ---------------------------------------------------------

    def submit(self, tensors: Mapping[str, Any] | Sequence[Any] = (), *, op: str = "echo", deadline_s: float = 5.0,
               codec: str = "raw", reply_codec: str = "raw", meta: dict | None = None, kind: str = "infer") -> int:
        """Queue a request and try to send it now; returns its seq. Results come from :meth:`poll`.

        Do not modify the tensors' memory until the request is resolved: large buffers
        are sent zero-copy and may be resent.
        """
        if self._closed:
            raise RuntimeError("client is closed")
        t_submit = now_ns()
        items = tensors.items() if isinstance(tensors, Mapping) else ((str(i), t) for i, t in enumerate(tensors))
        encoded = [encode(tensor, codec, name=str(name)) for name, tensor in items]
        seq = self._next_seq
        self._next_seq += 1
        deadline_ns = t_submit + int(deadline_s * 1e9)
        header = {
            "v": VERSION, "kind": kind, "client": self.client_id, "seq": seq, "attempt": 0,
            "op": op, "deadline_ns": deadline_ns, "reply_codec": reply_codec, "meta": meta or {},
            "tensors": [e.descriptor for e in encoded], "t": {}, "max_chunk": self.max_chunk,
        }
        pending = _Pending(seq, op, header, encoded, deadline_ns, t_submit,
                           sum(e.encode_s for e in encoded), sum(e.descriptor["nbytes"] for e in encoded))
        self._pending[seq] = pending
        try:
            self._send(pending)
        except Exception:  # e.g. header over 4 KiB: refuse now rather than time out later
            del self._pending[seq]
            raise
        return seq

    def _send(self, pending: _Pending) -> bool:
        now = now_ns()
        header = pending.header
        header["attempt"] = pending.attempts + 1
        header["budget_ns"] = max(0, pending.deadline_ns - now)  # for servers that cannot share our clock
        header["t"] = {"send": now}
        try:
            send_message(self._sock, header, [e.payload for e in pending.encoded],
                         chunk=min(self.chunk, self._peer_max_chunk))
        except zmq.Again:
            return False  # no connected peer (IMMEDIATE) or HWM reached: retried by poll()
        if pending.attempts:
            self.resends += 1
        pending.attempts += 1
        pending.sent = True
        pending.t_send = now
        return True

    def request(self, tensors: Mapping[str, Any] | Sequence[Any] = (), *, op: str = "echo", deadline_s: float = 5.0,
                codec: str = "raw", reply_codec: str = "raw", meta: dict | None = None) -> Result:
        """Send and wait; returns by the deadline (``timeout`` result) even if the link is dead."""
        seq = self.submit(tensors, op=op, deadline_s=deadline_s, codec=codec, reply_codec=reply_codec, meta=meta)
        return self._wait_for(seq)

    def ping(self, deadline_s: float = 1.0) -> Result:
        """Round trip without tensors or a handler (``kind: ping``)."""
        return self._wait_for(self.submit(op="", deadline_s=deadline_s, kind="ping"))

    def _wait_for(self, seq: int) -> Result:
        while seq not in self._ready:
            pending = self._pending.get(seq)
            if pending is None:  # resolved and taken already: cannot happen for a fresh seq
                raise KeyError(seq)
            self._step(max(0, pending.deadline_ns - now_ns()))
        return self._ready.pop(seq)

    # -- receiving ----------------------------------------------------------

    def poll(self, timeout: float = 0.0) -> list[Result]:
        """Results resolved so far (in resolution order), waiting up to ``timeout`` s for the first."""
        end = now_ns() + int(timeout * 1e9)
        while True:
            self._step(0)
            if self._ready or now_ns() >= end:
                break
            self._step(end - now_ns())
            if self._ready or now_ns() >= end:
                break
        ready = list(self._ready.values())
        self._ready.clear()
        return ready

    def _step(self, wait_ns: int) -> None:
        """Wait up to ``wait_ns`` (capped by the nearest deadline) for socket activity, then act on it."""
        if self._pending:
            nearest = min(p.deadline_ns for p in self._pending.values())
            wait_ns = min(wait_ns, max(0, nearest - now_ns()))
        flags = zmq.POLLIN | (zmq.POLLOUT if any(not p.sent for p in self._pending.values()) else 0)
        self._poller.register(self._sock, flags)
        events = dict(self._poller.poll(math.ceil(wait_ns / 1e6)))
        if self._monitor in events:
            self._handle_monitor()
        if events.get(self._sock, 0) & zmq.POLLIN:
            self._receive_all()
        self._send_unsent()
        self._expire()

    def _handle_monitor(self) -> None:
        while True:
            try:
                event = recv_monitor_message(self._monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            kind = event["event"]
            if kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._handshakes += 1
                if self._handshakes > 1:
                    self.reconnects += 1
                log.debug("client %s: connected to %s", self.client_id[:8], self.endpoint)
            elif kind == zmq.EVENT_DISCONNECTED:
                self.disconnects += 1
                self._peer_max_chunk = MAX_CHUNK  # the server may come back with other settings
                log.info("client %s: disconnected from %s", self.client_id[:8], self.endpoint)
                # queued and in-flight messages of that connection are gone: resend on reconnect
                for pending in self._pending.values():
                    pending.sent = False
            else:
                log.warning("client %s: handshake with %s failed (event %s, value %s)",
                            self.client_id[:8], self.endpoint, kind, event.get("value"))

    def _send_unsent(self) -> None:
        now = now_ns()
        for pending in list(self._pending.values()):
            if not pending.sent and pending.deadline_ns > now and not self._send(pending):
                return

    def _expire(self) -> None:
        now = now_ns()
        expired = [p for p in self._pending.values() if p.deadline_ns <= now]
        for pending in expired:
            where = "no connection to send on" if not pending.attempts else "no reply"
            self._resolve(pending.seq, Result(pending.seq, "timeout", pending.op, error=f"timeout: {where}"))
            if pending.attempts:
                self._consecutive_timeouts += 1
        if expired and self.reset_after_timeouts and self._consecutive_timeouts >= self.reset_after_timeouts:
            self._consecutive_timeouts = 0
            self._reset_socket()

    def _receive_all(self) -> None:
        for _ in range(RECEIVE_BATCH):
            if not self._sock.get(zmq.EVENTS) & zmq.POLLIN:  # cheaper than ending on zmq.Again
                return
            try:
                header, buffers, nbytes = receive_message(self._sock, self.max_chunk)
                self._on_reply(header, buffers, nbytes, now_ns())
            except zmq.Again:
                return
            except ProtocolError as exc:
                self.malformed_replies += 1
                log.warning("client %s: dropped malformed reply: %s", self.client_id[:8], exc)
            except zmq.ZMQError:
                raise
            except Exception:  # whatever a broken server sends costs one reply, never the client
                self.malformed_replies += 1
                log.exception("client %s: dropped a reply it could not handle", self.client_id[:8])

    def _on_reply(self, header: dict, buffers: list, nbytes: int, t_recv: int) -> None:
        seq = header["seq"]
        if header["client"] != self.client_id or header["kind"] not in STATUS_OF_KIND:
            self.stray_replies += 1
            return
        pending = self._pending.get(seq)
        if pending is not None and header["kind"] in ("result", "pong") and \
                (header["kind"] == "pong") != (pending.header["kind"] == "ping"):
            self.malformed_replies += 1  # a result for a ping or a pong for an infer: not an answer
            log.warning("client %s: dropped a %s reply to a %s request", self.client_id[:8], header["kind"],
                        pending.header["kind"])
            return
        if pending is None:
            previous = self._resolved.get(seq)
            if previous in ("timeout", "cancelled"):
                self.late_replies += 1
            elif previous is not None:
                self.duplicates_dropped += 1
            else:
                self.stray_replies += 1
            return
        self._consecutive_timeouts = 0
        if "max_chunk" in header:  # validated by decode_header
            self._peer_max_chunk = header["max_chunk"]
        status = STATUS_OF_KIND[header["kind"]]
        error = f"{header.get('code', header['kind'])}: {header.get('message', '')}"[:600] if status != "ok" else ""
        start = time.perf_counter()
        tensors = {}
        try:
            for index, (desc, buffer) in enumerate(zip(header["tensors"], buffers, strict=True)):
                tensors[desc.get("name") or str(index)] = decode(desc, buffer)
        except Exception as exc:  # a payload that does not decode as its descriptor says
            status, error, tensors = "error", f"bad_reply: {type(exc).__name__}: {exc}"[:600], {}
        decode_s = time.perf_counter() - start
        server_stamps = {k: v for k, v in header.get("t", {}).items()
                         if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_SEQ}
        stamps = {"t_send": server_stamps.get("send", pending.t_send), "t_recv": t_recv}
        for key in ("rx", "dec1", "tail0", "tail1", "tx"):
            if key in server_stamps:
                stamps[f"t_{key}"] = server_stamps[key]
        info = dict(header.get("info", {}))
        info["cached"] = bool(header.get("cached", False))
        self._resolve(seq, Result(seq, status, pending.op, tensors, info, stamps, bytes_down=nbytes,
                                  decode_s=decode_s, error=error))

    def _resolve(self, seq: int, result: Result) -> None:
        pending = self._pending.pop(seq)
        result.timestamps["t_submit"] = pending.t_submit
        result.timestamps.setdefault("t_resolved", now_ns())
        result.op = result.op or pending.op
        result.bytes_up = pending.bytes_up
        result.encode_s = pending.encode_s
        result.attempts = pending.attempts
        self._ready[seq] = result
        self._resolved[seq] = result.status
        while len(self._resolved) > RESOLVED_MEMORY:
            self._resolved.popitem(last=False)
