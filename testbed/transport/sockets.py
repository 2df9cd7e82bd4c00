"""Socket options shared by client and server (docs/protocol.md, "Socket options")."""

from __future__ import annotations

import zmq

from testbed.transport.protocol import FRAME_SLACK, MAX_CHUNK

MONITOR_EVENTS = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)


def configure(sock: zmq.Socket, *, heartbeat_ivl: float, heartbeat_timeout: float, hwm: int, linger_s: float,
              max_chunk: int = MAX_CHUNK, sndbuf: int = -1, rcvbuf: int = -1) -> None:
    """Bounded queues, bounded frames, heartbeats: a dead link is noticed within ``heartbeat_timeout``.

    ``max_chunk`` is the largest payload frame accepted (MAXMSGSIZE = it + 64 KiB);
    ``sndbuf``/``rcvbuf`` set SO_SNDBUF/SO_RCVBUF in bytes (-1: kernel autotuning).
    """
    sock.setsockopt(zmq.LINGER, int(linger_s * 1000))
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.RCVHWM, hwm)
    sock.setsockopt(zmq.MAXMSGSIZE, max_chunk + FRAME_SLACK)
    if sndbuf > 0:
        sock.setsockopt(zmq.SNDBUF, sndbuf)
    if rcvbuf > 0:
        sock.setsockopt(zmq.RCVBUF, rcvbuf)
    sock.setsockopt(zmq.HEARTBEAT_IVL, max(1, int(heartbeat_ivl * 1000)))
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, max(1, int(heartbeat_timeout * 1000)))
    # TTL tells the peer to drop us too (libzmq rounds it to 100 ms)
    sock.setsockopt(zmq.HEARTBEAT_TTL, max(100, int(heartbeat_timeout * 1000)))
    # TCP_USER_TIMEOUT: unacknowledged data may not hide a dead link longer than heartbeats would
    sock.setsockopt(zmq.TCP_MAXRT, max(1, int(2 * heartbeat_timeout * 1000)))
