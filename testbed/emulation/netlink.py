"""Minimal rtnetlink client for the two messages the trace replayer sends thousands of times.

Spawning ``tc`` costs ~2 ms per change; a netlink message costs ~0.05 ms, which
is what keeps the replay schedule lag well under a millisecond. Only two
operations are needed at run time:

* change an HTB class's rate/ceil in place (``tc class change ... htb``),
* change a TBF qdisc's rate/burst in place (the outage gate, see ``shaping``), and
* change a netem qdisc's delay/jitter/loss in place (RTT replay, loss bursts): the kernel's
  ``netem_change`` keeps the queued packets and their send times.

Everything else (building the qdisc tree once) uses the ``tc`` binary.
Sockets are opened inside the network namespace of the interface's host and
stay bound to it after the thread switches back (``setns(2)``).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import socket
import struct
import threading

NETLINK_ROUTE = 0
RTM_NEWQDISC = 36
RTM_NEWTCLASS = 40
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLMSG_ERROR = 0x2
TCA_KIND = 1
TCA_OPTIONS = 2
TCA_HTB_PARMS = 1
TCA_HTB_RATE64 = 6
TCA_HTB_CEIL64 = 7
TCA_TBF_PARMS = 1
TCA_TBF_RATE64 = 4
TCA_TBF_BURST = 6
TCA_NETEM_RATE = 6
TCA_NETEM_RATE64 = 8
TCA_NETEM_LATENCY64 = 10
TCA_NETEM_JITTER64 = 11
TC_LINKLAYER_ETHERNET = 1
CLONE_NEWNET = 0x40000000
AF_UNSPEC = 0

# Kernel scheduler ticks: tc's buffer fields are in "psched ticks"; the kernel
# converts ticks to ns with << 6 (PSCHED_SHIFT), i.e. one tick is 64 ns.
NS_PER_TICK = 64
U32_MAX = 0xFFFFFFFF
ENOBUFS_RETRIES = 2

_libc = ctypes.CDLL(None, use_errno=True)
_setns_lock = threading.Lock()


class NetlinkError(OSError):
    pass


def _attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    pad = (4 - length % 4) % 4
    return struct.pack("HH", length, kind) + payload + b"\0" * pad


def _ratespec(rate_bytes_per_s: int) -> bytes:
    # struct tc_ratespec {u8 cell_log; u8 linklayer; u16 overhead; s16 cell_align; u16 mpu; u32 rate;}
    # linklayer=ETHERNET tells the kernel no legacy rate table follows.
    return struct.pack("BBHhHI", 0, TC_LINKLAYER_ETHERNET, 0, -1, 0, min(rate_bytes_per_s, U32_MAX))


def _ticks(seconds: float) -> int:
    return max(1, min(U32_MAX, int(seconds * 1e9 / NS_PER_TICK)))


def _tcmsg(ifindex: int, handle: int, parent: int) -> bytes:
    # struct tcmsg {u8 family; u8 pad1; u16 pad2; s32 ifindex; u32 handle; u32 parent; u32 info;}
    return struct.pack("BBHiIII", AF_UNSPEC, 0, 0, ifindex, handle, parent, 0)


def htb_class_options(rate_bps: float, burst_bytes: int, quantum: int = 1514) -> bytes:
    """TCA_OPTIONS payload for an HTB class with rate == ceil == ``rate_bps`` (bit/s)."""
    rate = max(1, int(rate_bps / 8))
    buffer = _ticks(burst_bytes / rate)
    parms = _ratespec(rate) + _ratespec(rate) + struct.pack("IIIII", buffer, buffer, quantum, 0, 0)
    opts = _attr(TCA_HTB_PARMS, parms)
    if rate > U32_MAX:
        opts += _attr(TCA_HTB_RATE64, struct.pack("Q", rate)) + _attr(TCA_HTB_CEIL64, struct.pack("Q", rate))
    return opts


def tbf_options(rate_bps: float, burst_bytes: int, limit_bytes: int) -> bytes:
    """TCA_OPTIONS payload for a TBF qdisc (peak rate unset)."""
    rate = max(1, int(rate_bps / 8))
    buffer = _ticks(burst_bytes / rate)
    # struct tc_tbf_qopt {tc_ratespec rate; tc_ratespec peakrate; u32 limit; u32 buffer; u32 mtu;}
    qopt = _ratespec(rate) + struct.pack("BBHhHI", 0, 0, 0, 0, 0, 0) + struct.pack("III", limit_bytes, buffer, 0)
    opts = _attr(TCA_TBF_PARMS, qopt) + _attr(TCA_TBF_BURST, struct.pack("I", burst_bytes))
    if rate > U32_MAX:
        opts += _attr(TCA_TBF_RATE64, struct.pack("Q", rate))
    return opts


def netem_options(delay_ms: float, jitter_ms: float, loss_pct: float, limit_packets: int,
                  rate_bps: float) -> bytes:
    """TCA_OPTIONS payload for a netem qdisc: the *whole* state (netem_change resets what is left out).

    ``rate_bps`` > 0 makes netem serialise packets in arrival order: each packet leaves no earlier than
    the one before it, so a delay that drops from one step to the next (or jitter) never reorders.
    """
    latency_ns, jitter_ns = int(round(delay_ms * 1e6)), int(round(jitter_ms * 1e6))
    loss = min(U32_MAX, int(round(loss_pct / 100 * U32_MAX)))
    # struct tc_netem_qopt {u32 latency (ticks); u32 limit; u32 loss; u32 gap; u32 duplicate; u32 jitter (ticks)}
    qopt = struct.pack("IIIIII", min(U32_MAX, latency_ns // NS_PER_TICK), limit_packets, loss, 0, 0,
                       min(U32_MAX, jitter_ns // NS_PER_TICK))
    attrs = _attr(TCA_NETEM_LATENCY64, struct.pack("q", latency_ns))
    attrs += _attr(TCA_NETEM_JITTER64, struct.pack("q", jitter_ns))
    if rate_bps > 0:
        rate = int(rate_bps / 8)
        # struct tc_netem_rate {u32 rate (bytes/s); s32 packet_overhead; u32 cell_size; s32 cell_overhead}
        attrs += _attr(TCA_NETEM_RATE, struct.pack("IiIi", min(rate, U32_MAX), 0, 0, 0))
        if rate > U32_MAX:
            attrs += _attr(TCA_NETEM_RATE64, struct.pack("Q", rate))
    return qopt + attrs


def _setns(fd: int, what: str) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NetlinkError(err, f"setns into {what}: {os.strerror(err)}")


def enter_netns(pid: int) -> None:
    """Move the calling thread into the network namespace of ``pid`` (for good)."""
    target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
    try:
        _setns(target, f"the network namespace of pid {pid}")
    finally:
        os.close(target)


@contextlib.contextmanager
def in_netns(pid: int | None):
    """Run the body in the network namespace of ``pid`` (None: stay here)."""
    if pid is None:
        yield
        return
    with _setns_lock:
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            enter_netns(pid)
            try:
                yield
            finally:
                _setns(own, "the thread's own network namespace")  # pragma: no cover on failure
        finally:
            os.close(own)


class TcSocket:
    """An rtnetlink socket bound to one network namespace, sending tc changes with ACKs."""

    def __init__(self, netns_pid: int | None = None):
        with in_netns(netns_pid):
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
            self.sock.bind((0, 0))
            self._ifindex_cache: dict[str, int] = {}
            self._netns_pid = netns_pid
        self.seq = 0
        self.enobufs_retries = 0

    def close(self) -> None:
        self.sock.close()

    def ifindex(self, ifname: str) -> int:
        if ifname not in self._ifindex_cache:
            with in_netns(self._netns_pid):
                self._ifindex_cache[ifname] = socket.if_nametoindex(ifname)
        return self._ifindex_cache[ifname]

    def _request(self, msg_type: int, body: bytes) -> None:
        """Send one change and wait for its ACK. A tc change sets a whole state, so it is idempotent:
        when the kernel could not queue the ACK (ENOBUFS: seen under a starved, emulated CPU) the
        outcome is unknown and the change is sent again."""
        for attempt in range(ENOBUFS_RETRIES + 1):
            try:
                self._request_once(msg_type, body)
                return
            except OSError as exc:
                if exc.errno != errno.ENOBUFS or attempt == ENOBUFS_RETRIES:
                    raise
                self.enobufs_retries += 1

    def _request_once(self, msg_type: int, body: bytes) -> None:
        self.seq += 1
        header = struct.pack("IHHII", 16 + len(body), msg_type, NLM_F_REQUEST | NLM_F_ACK, self.seq, 0)
        self.sock.send(header + body)
        while True:
            data = self.sock.recv(65536)
            offset = 0
            while offset < len(data):
                length, kind, _flags, seq, _pid = struct.unpack_from("IHHII", data, offset)
                if kind == NLMSG_ERROR and seq == self.seq:
                    (errno_neg,) = struct.unpack_from("i", data, offset + 16)
                    if errno_neg:
                        raise NetlinkError(-errno_neg, os.strerror(-errno_neg))
                    return
                offset += (length + 3) & ~3

    def change_htb_class(self, ifname: str, classid: int, parent: int, rate_bps: float, burst_bytes: int) -> None:
        body = _tcmsg(self.ifindex(ifname), classid, parent)
        body += _attr(TCA_KIND, b"htb\0") + _attr(TCA_OPTIONS, htb_class_options(rate_bps, burst_bytes))
        self._request(RTM_NEWTCLASS, body)

    def change_tbf(self, ifname: str, handle: int, parent: int, rate_bps: float, burst_bytes: int,
                   limit_bytes: int) -> None:
        body = _tcmsg(self.ifindex(ifname), handle, parent)
        body += _attr(TCA_KIND, b"tbf\0") + _attr(TCA_OPTIONS, tbf_options(rate_bps, burst_bytes, limit_bytes))
        self._request(RTM_NEWQDISC, body)

    def change_netem(self, ifname: str, handle: int, parent: int, delay_ms: float, jitter_ms: float,
                     loss_pct: float, limit_packets: int, rate_bps: float) -> None:
        body = _tcmsg(self.ifindex(ifname), handle, parent)
        body += _attr(TCA_KIND, b"netem\0") + _attr(
            TCA_OPTIONS, netem_options(delay_ms, jitter_ms, loss_pct, limit_packets, rate_bps))
        self._request(RTM_NEWQDISC, body)


def tc_handle(major: int, minor: int = 0) -> int:
    return (major << 16) | minor
