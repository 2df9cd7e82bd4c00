"""Cloud-side server: one ROUTER for many devices, a bounded job queue and a worker pool.

The I/O thread owns the ROUTER: it validates every message before allocating,
answers ``busy``/``expired``/``error`` itself, dedupes on (client, seq) with a reply
cache, and forwards replies the workers produce. Handlers are plain callables
``handler(request) -> tensors | (tensors, info)`` keyed by the request's ``op``.

Run alone with ``testbed serve`` or ``python -m testbed.transport.server``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from testbed.transport.codecs import Encoded, decode, encode, warm_up
from testbed.transport.protocol import (
    CHUNK,
    MAX_ATTEMPT,
    MAX_CHUNK,
    MAX_NAME,
    MAX_SEQ,
    VERSION,
    ProtocolError,
    check_chunk,
    drain,
    encode_header,
    now_ns,
    receive_message,
    send_message,
)
from testbed.transport.sockets import configure

log = logging.getLogger("testbed.transport.server")

MAX_SLEEP_S = 10.0


@dataclass
class Request:
    """What a handler sees: decoded tensors (numpy; torch for bfloat16) plus the header fields."""

    op: str
    tensors: dict[str, Any]
    meta: dict[str, Any]
    client: str
    seq: int
    attempt: int
    deadline_ns: int

    def remaining_s(self) -> float:
        return (self.deadline_ns - now_ns()) / 1e9


Handler = Callable[[Request], Any]


def echo(request: Request) -> dict[str, Any]:
    """Return the tensors unchanged (transport tests and benchmarks)."""
    return request.tensors


def sleep_echo(request: Request) -> tuple[dict[str, Any], dict]:
    """Echo after ``meta.sleep_s`` seconds (capped): simulates a slow model."""
    delay = min(float(request.meta.get("sleep_s", 0.0)), MAX_SLEEP_S)
    time.sleep(max(0.0, delay))
    return request.tensors, {"slept_s": delay}


def discard(request: Request) -> tuple[dict, dict]:
    """Return nothing but the byte count: uplink-only measurements."""
    nbytes = sum(getattr(t, "nbytes", 0) for t in request.tensors.values())
    return {}, {"received_bytes": int(nbytes)}


def inline(handler: Handler) -> Handler:
    """Mark a handler cheap enough to run in the server's I/O thread (no worker hand-off).

    Inline handlers skip the job queue (never ``busy``) and block the I/O thread while
    they run, so only use it for microsecond work; heartbeats are unaffected (libzmq's
    own I/O thread answers them).
    """
    handler.inline = True  # type: ignore[attr-defined]
    return handler


inline(echo)
inline(discard)

BUILTIN_HANDLERS: dict[str, Handler] = {"echo": echo, "sleep": sleep_echo, "discard": discard}


def request_identity(header: dict) -> tuple:
    """What makes a resend "the same request": everything but attempt, timing and chunking.

    Payload bytes are not compared (hashing up to 128 MiB per resend would cost more than
    the dedupe saves); a client that reuses a seq for other content gets ``seq_reused``
    only when the header differs.
    """
    tensors = tuple(tuple(sorted((k, repr(v)) for k, v in d.items() if k != "chunks")) for d in header["tensors"])
    return (header["kind"], header.get("op", ""), header.get("reply_codec", "raw"), repr(header.get("meta", {})),
            tensors)


@dataclass
class _Job:
    key: tuple[str, int]
    header: dict
    buffers: list
    t_rx: int
    t_rx1: int


@dataclass
class _Done:
    key: tuple[str, int]
    header: dict  # reply header without t.tx
    encoded: list[Encoded] = field(default_factory=list)
    request: dict = field(default_factory=dict)  # its request header: tells a resend from a reused seq


@dataclass
class _Cached:
    expires_ns: int
    done: _Done
    nbytes: int


@dataclass
class ServerStats:
    received: int = 0
    replied: int = 0
    results: int = 0
    errors: int = 0
    malformed: int = 0
    busy: int = 0
    expired: int = 0
    cached_replies: int = 0
    duplicates_in_progress: int = 0
    seq_reused: int = 0
    unroutable: int = 0
    internal_errors: int = 0  # bugs caught by the per-message guard (the server kept serving)


class Server:
    """Serve ``handlers`` on ``endpoint`` (e.g. ``tcp://*:5555``) until :meth:`stop`.

    ``max_queue`` bounds jobs waiting for a worker (beyond it: ``busy``); replies are
    cached ``cache_ttl_s`` (longer than any client deadline) and ``cache_max_bytes``
    so a resent request is answered without recomputing. ``curve_dir`` enables CURVE
    with the key directory of ``testbed keys``: only its authorized clients connect.
    ``shared_clock`` trusts the client's ``deadline_ns`` (true inside one emulated
    host); otherwise the deadline is ``budget_ns`` after reception.

    ``chunk`` is the reply frame size (capped by each client's advertised ``max_chunk``);
    ``max_chunk`` the largest request frame accepted (default ``max(chunk, 256 KiB)``).
    Ops in ``inline_ops`` (default: handlers marked with :func:`inline`, i.e. ``echo``
    and ``discard``) run in the I/O thread instead of the worker pool. ``warm_up`` loads
    the lazily imported codec libraries (torch for bfloat16, lz4, zstd) before serving,
    so that no request pays for an import on the I/O path.

    No peer input ends the server: every message is handled inside a guard that answers
    a documented error code (docs/protocol.md, "Error codes") and serves on.
    """

    def __init__(self, endpoint: str = "tcp://*:5555", *, handlers: Mapping[str, Handler] | None = None,
                 workers: int = 2, max_queue: int = 16, heartbeat_ivl: float = 0.5,
                 heartbeat_timeout: float = 3.0, hwm: int = 64, curve_dir: str | Path | None = None,
                 cache_ttl_s: float = 60.0, cache_max_bytes: int = 256 * 1024 * 1024, shared_clock: bool = True,
                 chunk: int = CHUNK, max_chunk: int | None = None, linger_s: float = 1.0,
                 inline_ops: Iterable[str] | None = None, sndbuf: int = -1, rcvbuf: int = -1,
                 warm_up: bool = True):
        self.endpoint = endpoint
        self.handlers: dict[str, Handler] = dict(BUILTIN_HANDLERS if handlers is None else handlers)
        self.workers = max(1, workers)
        self.max_queue = max(1, max_queue)
        self.heartbeat_ivl = heartbeat_ivl
        self.heartbeat_timeout = heartbeat_timeout
        self.hwm = hwm
        self.curve_dir = curve_dir
        self.cache_ttl_ns = int(cache_ttl_s * 1e9)
        self.cache_max_bytes = cache_max_bytes
        self.shared_clock = shared_clock
        self.chunk = check_chunk(chunk)
        self.max_chunk = check_chunk(max(chunk, MAX_CHUNK) if max_chunk is None else max_chunk, "max_chunk")
        self.sndbuf, self.rcvbuf = sndbuf, rcvbuf
        if inline_ops is None:
            inline_ops = [name for name, fn in self.handlers.items() if getattr(fn, "inline", False)]
        self.inline_ops = frozenset(inline_ops)
        self.linger_s = linger_s
        self.warm_up = warm_up
        self.stats = ServerStats()
        self.bound_endpoint: str | None = None
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._jobs: queue.Queue[_Job | None] = queue.Queue(maxsize=self.max_queue)
        self._done: queue.SimpleQueue[_Done] = queue.SimpleQueue()
        # in-progress key -> (latest routing id, largest frame that peer accepts, request header)
        self._routes: dict[tuple[str, int], tuple[bytes, int, dict]] = {}
        self._cache: OrderedDict[tuple[str, int], _Cached] = OrderedDict()
        self._cache_bytes = 0
        self._wake_endpoint = f"inproc://testbed-server-wake-{id(self):x}"

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> Server:
        """Serve in a background thread; returns once bound (``bound_endpoint`` is set)."""
        self._thread = threading.Thread(target=self.serve_forever, name="transport-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(120):  # warm-up imports torch: seconds on a loaded machine
            raise TimeoutError(f"server on {self.endpoint} not ready after 120 s")
        if self._startup_error is not None:
            raise self._startup_error
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the loop to finish (safe from signal handlers and other threads)."""
        self._stopping.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serve_forever(self) -> None:
        ctx = zmq.Context()
        authenticator = None
        router = wake = None
        workers: list[threading.Thread] = []
        try:
            if self.warm_up:
                warm_up()
            router = ctx.socket(zmq.ROUTER)
            configure(router, heartbeat_ivl=self.heartbeat_ivl, heartbeat_timeout=self.heartbeat_timeout,
                      hwm=self.hwm, linger_s=self.linger_s, max_chunk=self.max_chunk,
                      sndbuf=self.sndbuf, rcvbuf=self.rcvbuf)
            router.setsockopt(zmq.ROUTER_MANDATORY, 1)  # unroutable replies raise instead of vanishing
            if self.curve_dir is not None:
                authenticator = self._setup_curve(ctx, router)
            router.bind(self.endpoint)
            self.bound_endpoint = router.getsockopt_string(zmq.LAST_ENDPOINT)
            wake = ctx.socket(zmq.PULL)
            wake.bind(self._wake_endpoint)
            for index in range(self.workers):
                thread = threading.Thread(target=self._worker, args=(ctx, index), name=f"transport-worker-{index}",
                                          daemon=True)
                thread.start()
                workers.append(thread)
        except BaseException as exc:
            self._startup_error = exc
            self._ready.set()
            for sock in (router, wake):
                if sock is not None:
                    sock.close(linger=0)
            ctx.term()
            raise
        log.info("serving %s on %s with %d workers, queue %d%s", sorted(self.handlers), self.bound_endpoint,
                 self.workers, self.max_queue, ", CURVE" if authenticator else "")
        self._ready.set()
        try:
            self._loop(router, wake)
        finally:
            self._shutdown(router, workers)
            for sock in (router, wake):
                sock.close()
            if authenticator is not None:
                authenticator.stop()
            ctx.term()
            log.info("server stopped: %s", self.stats)

    def _setup_curve(self, ctx: zmq.Context, router: zmq.Socket) -> Any:
        from zmq.auth.thread import ThreadAuthenticator

        from testbed.transport.keys import load_server_keys

        public, secret, authorized = load_server_keys(self.curve_dir)
        authenticator = ThreadAuthenticator(ctx, log=logging.getLogger("testbed.transport.auth"))
        authenticator.start()
        authenticator.configure_curve(domain="*", location=str(authorized))
        router.curve_server = True
        router.curve_publickey = public
        router.curve_secretkey = secret
        return authenticator

    def _shutdown(self, router: zmq.Socket, workers: list[threading.Thread]) -> None:
        """Refuse queued jobs, let running ones finish (bounded), flush their replies."""
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:  # _reply_error takes the route: popping it here first meant no reply at all
                self._reply_error(router, job.key, job.header, "shutting_down", "server is stopping")
        for _ in workers:
            self._jobs.put(None)
        deadline = time.monotonic() + 5.0
        for thread in workers:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._forward_done(router)
        if self.stats.received:
            # Clients connect with IMMEDIATE=1: libzmq discards messages a peer has received but not yet
            # read when the connection drops. Keep the connection up briefly so final replies get read.
            time.sleep(min(self.linger_s, 0.5))

    # -- I/O loop -------------------------------------------------------------

    def _loop(self, router: zmq.Socket, wake: zmq.Socket) -> None:
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        poller.register(wake, zmq.POLLIN)
        next_sweep = now_ns()
        while not self._stopping.is_set():
            try:
                events = dict(poller.poll(100))
                if wake in events:
                    while True:
                        try:
                            wake.recv(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                self._forward_done(router)
                if router in events:
                    for _ in range(64):  # bounded batch: replies get their turn
                        if not self._receive_one(router):
                            break
                if now_ns() >= next_sweep:
                    self._sweep_cache()
                    next_sweep = now_ns() + 1_000_000_000
            except zmq.ContextTerminated:
                raise
            except Exception:  # a bug must cost one message, never the server
                self.stats.internal_errors += 1
                log.exception("I/O loop error (serving on)")

    def _receive_one(self, router: zmq.Socket) -> bool:
        if not router.get(zmq.EVENTS) & zmq.POLLIN:  # cheaper than raising zmq.Again
            return False
        try:
            routing_id = router.recv(zmq.NOBLOCK)
        except zmq.Again:
            return False
        t_rx = now_ns()
        self.stats.received += 1
        if not router.get(zmq.RCVMORE):
            self.stats.malformed += 1
            return True
        header: dict = {}
        try:
            header, buffers, _ = receive_message(router, self.max_chunk)
            self._handle(router, routing_id, header, buffers, t_rx)
        except ProtocolError as exc:
            self.stats.malformed += 1
            log.warning("rejected message from %s: %s", routing_id.hex(), exc)
            self._send_header(router, routing_id, self._error_header(exc.header, exc.code, exc.message))
        except zmq.ContextTerminated:
            raise
        except Exception as exc:  # a bug must cost one message, never the server
            self.stats.internal_errors += 1
            log.exception("internal error on a message from %s (serving on)", routing_id.hex())
            drain(router)
            self._send_header(router, routing_id, self._error_header(header, "internal_error", type(exc).__name__))
        return True

    def _handle(self, router: zmq.Socket, routing_id: bytes, header: dict, buffers: list, t_rx: int) -> None:
        """Answer one validated message: pong, cached reply, expired, unknown_op, busy, or run it."""
        t_rx1 = now_ns()
        if header["kind"] not in ("infer", "ping"):
            self.stats.malformed += 1
            self._send_header(router, routing_id, self._error_header(header, "bad_kind", "servers take infer|ping"))
            return
        key = (header["client"], header["seq"])
        peer_chunk = min(self.chunk, header.get("max_chunk", MAX_CHUNK))
        if header["kind"] == "ping":
            reply = self._reply_header(header, "pong")
            reply["t"].update(rx=t_rx)
            self._send_header(router, routing_id, reply)
            return
        cached = self._cache.get(key)
        route = self._routes.get(key)
        first = cached.done.request if cached is not None else route[2] if route is not None else None
        if first is not None and request_identity(first) != request_identity(header):
            self.stats.seq_reused += 1
            self._send_header(router, routing_id, self._error_header(
                header, "seq_reused", f"seq {header['seq']} was already used for a different request"))
            return
        if cached is not None:
            self.stats.cached_replies += 1
            self._cache.move_to_end(key)
            self._send_done(router, routing_id, cached.done, cached=True, chunk=peer_chunk)
            return
        if route is not None:  # being computed: the reply will go to the newest connection
            self.stats.duplicates_in_progress += 1
            self._routes[key] = (routing_id, peer_chunk, route[2])
            return
        deadline_ns = header["deadline_ns"] if self.shared_clock else t_rx + header.get("budget_ns", 0)
        # no request outlives its cached reply: a resend within the deadline is always deduplicated
        header["deadline_ns"] = deadline_ns = min(deadline_ns, t_rx + self.cache_ttl_ns)
        if t_rx1 >= deadline_ns:
            self.stats.expired += 1
            reply = self._reply_header(header, "expired", code="expired", message="deadline passed before queueing")
            reply["t"].update(rx=t_rx)
            self._send_header(router, routing_id, reply)
            return
        if header.get("op") not in self.handlers:
            self._send_header(router, routing_id, self._error_header(
                header, "unknown_op", f"op {header.get('op')!r} not in {sorted(self.handlers)}"))
            return
        job = _Job(key, header, buffers, t_rx, t_rx1)
        if header["op"] in self.inline_ops:  # cheap op: run here, no hand-off to a worker
            done = self._run(job, -1)
            if done.header["kind"] in ("result", "error", "expired"):
                self._remember(done)
            self._send_done(router, routing_id, done, cached=False, chunk=peer_chunk)
            return
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            self.stats.busy += 1
            reply = self._reply_header(header, "busy", code="busy", message=f"queue of {self.max_queue} is full")
            reply["t"].update(rx=t_rx)
            self._send_header(router, routing_id, reply)
            return
        self._routes[key] = (routing_id, peer_chunk, header)

    def _forward_done(self, router: zmq.Socket) -> None:
        while not self._done.empty():  # no queue.Empty exception per loop turn
            try:
                done = self._done.get_nowait()
            except queue.Empty:
                return
            route = self._routes.pop(done.key, None)
            if done.header["kind"] in ("result", "error", "expired"):
                self._remember(done)
            if route is not None:
                self._send_done(router, route[0], done, cached=False, chunk=route[1])

    def _send_done(self, router: zmq.Socket, routing_id: bytes, done: _Done, *, cached: bool, chunk: int) -> None:
        header = dict(done.header)
        header["cached"] = cached
        header["t"] = dict(header["t"], tx=now_ns())
        header["tensors"] = [dict(e.descriptor) for e in done.encoded]
        self._send(router, routing_id, header, [e.payload for e in done.encoded], chunk)

    def _send_header(self, router: zmq.Socket, routing_id: bytes, header: dict) -> None:
        header["t"] = dict(header.get("t", {}), tx=now_ns())
        self._send(router, routing_id, header, [], MAX_CHUNK)

    def _send(self, router: zmq.Socket, routing_id: bytes, header: dict, payloads: Sequence, chunk: int) -> None:
        header["max_chunk"] = self.max_chunk  # lets the client raise its frame size up to ours
        # counted before sending: the peer may read the reply before this thread runs on
        self._count(header["kind"], 1)
        try:
            try:
                send_message(router, header, payloads, routing_id=routing_id, chunk=chunk)
            except (ValueError, TypeError) as exc:  # the reply cannot be encoded within the protocol's limits
                self._count(header["kind"], -1)
                code = "reply_too_large" if isinstance(exc, ValueError) else "handler_error"
                log.warning("reply seq %s replaced by %s: %s", header.get("seq"), code, exc)
                header = self._error_header(header, code, str(exc))
                header["t"]["tx"] = now_ns()
                header["max_chunk"] = self.max_chunk
                self._count(header["kind"], 1)
                send_message(router, header, [], routing_id=routing_id, chunk=chunk)
        except zmq.Again:
            self._count(header["kind"], -1)
            self.stats.unroutable += 1
            log.warning("reply seq %s dropped: peer's queue is full", header.get("seq"))
        except zmq.ZMQError as exc:
            self._count(header["kind"], -1)
            if exc.errno != zmq.EHOSTUNREACH:
                raise
            self.stats.unroutable += 1
            log.info("reply seq %s dropped: peer %s disconnected (kept in cache)", header.get("seq"), routing_id.hex())

    def _count(self, kind: str, step: int) -> None:
        self.stats.replied += step
        if kind == "result":
            self.stats.results += step
        elif kind == "error":
            self.stats.errors += step

    def _remember(self, done: _Done) -> None:
        nbytes = sum(len(e.payload) for e in done.encoded) + 512
        self._cache[done.key] = _Cached(now_ns() + self.cache_ttl_ns, done, nbytes)
        self._cache_bytes += nbytes
        self._sweep_cache()

    def _sweep_cache(self) -> None:
        now = now_ns()
        while self._cache:
            key, entry = next(iter(self._cache.items()))
            if entry.expires_ns > now and self._cache_bytes <= self.cache_max_bytes:
                break
            self._cache.popitem(last=False)
            self._cache_bytes -= entry.nbytes

    @staticmethod
    def _reply_header(request: dict, kind: str, *, code: str = "", message: str = "") -> dict:
        header = {"v": VERSION, "kind": kind, "client": request.get("client", ""), "seq": request.get("seq", 0),
                  "attempt": request.get("attempt", 1), "op": request.get("op", ""), "tensors": [],
                  "info": {}, "t": {}}
        send = request.get("t", {}).get("send")
        if _int_in(send, 0, MAX_SEQ):  # anything else could make the reply header too large
            header["t"]["send"] = send
        if code:
            header["code"], header["message"] = code, message[:500]
        return header

    def _error_header(self, request: dict, code: str, message: str) -> dict:
        """An error reply echoing what can be echoed of a request that may be anything."""
        request = {k: v for k, v in request.items() if k in ("client", "seq", "attempt", "op", "t")}
        if not isinstance(request.get("client"), str) or len(request["client"]) > MAX_NAME:
            request["client"] = ""
        if not _int_in(request.get("seq"), 0, MAX_SEQ):
            request["seq"] = 0
        if not _int_in(request.get("attempt"), 0, MAX_ATTEMPT):
            request["attempt"] = 1
        if not isinstance(request.get("op"), str) or len(request["op"]) > MAX_NAME:
            request["op"] = ""
        if not isinstance(request.get("t"), dict):
            request["t"] = {}
        return self._reply_header(request, "error", code=code, message=message)

    def _reply_error(self, router: zmq.Socket, key: tuple[str, int], header: dict, code: str, message: str) -> None:
        route = self._routes.pop(key, None)
        if route is not None:
            self._send_header(router, route[0], self._error_header(header, code, message))

    # -- workers --------------------------------------------------------------

    def _worker(self, ctx: zmq.Context, index: int) -> None:
        wake = ctx.socket(zmq.PUSH)
        wake.setsockopt(zmq.LINGER, 0)
        wake.connect(self._wake_endpoint)
        try:
            while True:
                job = self._jobs.get()
                if job is None:
                    return
                self._done.put(self._run(job, index))
                try:
                    wake.send(b"", zmq.NOBLOCK)
                except zmq.Again:
                    pass  # the I/O loop is already awake with unread wake-ups
        finally:
            wake.close()

    def _run(self, job: _Job, worker: int) -> _Done:
        header = job.header
        t_start = now_ns()
        reply = self._reply_header(header, "result")
        reply["t"].update(rx=job.t_rx)
        info: dict[str, Any] = {"queue_s": (t_start - job.t_rx1) / 1e9, "worker": worker}
        if t_start >= header["deadline_ns"]:
            self.stats.expired += 1
            reply = self._reply_header(header, "expired", code="expired", message="deadline passed in the queue")
            reply["t"].update(rx=job.t_rx)
            reply["info"] = info
            return _Done(job.key, reply, request=job.header)
        try:
            tensors = {}
            for index, (desc, buffer) in enumerate(zip(header["tensors"], job.buffers, strict=True)):
                tensors[desc.get("name") or str(index)] = decode(desc, buffer)
        except Exception as exc:  # e.g. a compressed payload that is corrupt or decompresses to another size
            return self._failed(job, info, "bad_payload", exc)
        t_dec1 = now_ns()
        request = Request(header["op"], tensors, header.get("meta", {}), header["client"], header["seq"],
                          header["attempt"], header["deadline_ns"])
        t_tail0 = now_ns()
        try:
            output = self.handlers[header["op"]](request)
            t_tail1 = now_ns()
            out_tensors, handler_info = output if isinstance(output, tuple) else (output, {})
            if not isinstance(out_tensors, Mapping):
                out_tensors = {str(i): t for i, t in enumerate(out_tensors or [])}
            if handler_info:
                encode_header({"info": dict(handler_info)})  # JSON object within the header limit, or raises
            reply_codec = header.get("reply_codec", "raw")
            encoded = [encode(t, reply_codec, name=str(name)) for name, t in out_tensors.items()]
            if t_tail1 >= header["deadline_ns"]:  # nobody waits for it: do not spend the downlink on tensors
                self.stats.expired += 1
                info.update(handler_info, compute_s=(t_tail1 - t_tail0) / 1e9)
                reply = self._reply_header(header, "expired", code="expired",
                                           message="deadline passed while the handler ran")
                reply["t"].update(rx=job.t_rx, dec1=t_dec1, tail0=t_tail0, tail1=t_tail1)
                reply["info"] = info
                return _Done(job.key, reply, request=job.header)
            info.update(handler_info)
        except Exception as exc:  # a handler bug (or output the wire cannot carry) must not take the server down
            return self._failed(job, info, "handler_error", exc)
        info.update(decode_s=(t_dec1 - t_start) / 1e9, compute_s=(t_tail1 - t_tail0) / 1e9,
                    encode_s=sum(e.encode_s for e in encoded))
        reply["t"].update(dec1=t_dec1, tail0=t_tail0, tail1=t_tail1)
        reply["info"] = info
        return _Done(job.key, reply, encoded, job.header)

    def _failed(self, job: _Job, info: dict, code: str, exc: Exception) -> _Done:
        log.warning("op %r failed for seq %s: %s: %s", job.header.get("op"), job.header.get("seq"), code, exc,
                    exc_info=code == "handler_error")
        reply = self._reply_header(job.header, "error", code=code, message=f"{type(exc).__name__}: {exc}")
        reply["t"].update(rx=job.t_rx)
        reply["info"] = info
        return _Done(job.key, reply, request=job.header)


def _int_in(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def main(argv: list[str] | None = None) -> int:
    """``python -m testbed.transport.server``: same options as ``testbed serve``."""
    import argparse

    from testbed.transport.cli import add_serve_arguments, run_serve

    parser = argparse.ArgumentParser(prog="python -m testbed.transport.server", description=run_serve.__doc__)
    add_serve_arguments(parser)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname).1s %(name)s: %(message)s", datefmt="%H:%M:%S")
    return run_serve(args)


if __name__ == "__main__":
    raise SystemExit(main())
