"""The tc tree on each shaped interface, and the in-place changes the replayer makes.

Per shaped direction (the egress of the sending node's interface)::

    1:    htb root (default class 1:10)
    1:10  htb class   rate == ceil == current trace rate  <- changed in place (netlink) at every step
    10:   tbf         the outage gate: open (10 Gbit/s), hold or drop
    20:   pfifo limit <queue_packets>, or netem (delay/jitter/loss + limit) where the kernel has it
          <- delay (trace RTT) and loss changed in place (netlink) where the timeline says so

The gate sits *below* HTB so that a closed link never makes HTB send, hence
never charges time debt (see ``schedule``). Hold = TBF at 1 byte/s: packets
stay queued (at most one MTU leaks at the moment of closing, the bucket being
full); drop = the same with a queue limit of 0, so every arriving packet is
dropped on enqueue (those already queued are held). Its one-MTU bucket also
splits GSO super-packets (see :func:`gate_params`).

netem holds a packet for its delay *before* HTB may send it, so its queue holds the delay line as
well as the backlog: its limit is ``queue_packets`` plus what the delay line holds at the link's
peak rate (:func:`delay_line_packets`), so a delay never shrinks the configured queue. netem is given
a rate far above the link's (10 Gbit/s): with a rate, each packet leaves no earlier than the one
before it, so jitter and a delay that drops between trace steps never reorder packets. When the gate opens
TBF's watchdog is still far in the future, so the replayer sends one tiny
frame on the interface: its enqueue makes the qdisc dequeue the held packets
at once, as a cell that regains capacity would.
"""

from __future__ import annotations

import socket
import struct
import subprocess
from dataclasses import dataclass

from testbed.emulation import netlink
from testbed.emulation.schedule import DROP, HOLD, MTU_WIRE_BYTES, OPEN, UNSHAPED_BPS, Step
from testbed.errors import CapabilityError

ROOT = netlink.tc_handle(1, 0)
CLASS = netlink.tc_handle(1, 0x10)
GATE = netlink.tc_handle(0x10, 0)
GATE_CLASS = netlink.tc_handle(0x10, 1)  # TBF's inner class, the netem/pfifo leaf's parent
NETEM = netlink.tc_handle(0x20, 0)
KICK_ETHERTYPE = 0x88B5  # IEEE "local experimental": dropped by every receiver


@dataclass
class Port:
    """One shaped direction: the interface whose egress carries it."""

    link: str
    direction: str
    node: str
    ifname: str
    netns_pid: int | None  # None: root namespace (a switch port)
    queue_packets: int
    use_netem: bool
    delay_ms: float
    jitter_ms: float
    loss_mode: str | None  # "netem", "iptables" or None
    # iptables loss fallback: rule is added in this namespace with these match arguments
    loss_netns_pid: int | None = None
    loss_match: tuple[str, ...] = ()
    delay_line_packets: int = 0  # extra netem limit: packets in flight in the delay line at peak rate

    @property
    def key(self) -> str:
        return f"{self.link}.{self.direction}"


def ns_cmd(netns_pid: int | None, argv: list[str]) -> list[str]:
    if netns_pid is None:
        return argv
    return ["nsenter", f"--net=/proc/{netns_pid}/ns/net", "--", *argv]


def run(netns_pid: int | None, argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(ns_cmd(netns_pid, argv), capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise RuntimeError(f"command failed ({proc.returncode}): {' '.join(argv)}: {proc.stderr.strip()}")
    return proc


def htb_burst(rate_bps: float) -> int:
    """Bucket of ~2 ms at the current rate, at least two MTUs (timer slack on a busy host)."""
    return int(max(2 * MTU_WIRE_BYTES, rate_bps / 8 * 0.002))


def delay_line_packets(steps: list[Step], jitter_ms: float) -> int:
    """Packets the netem delay line holds at most: peak rate x (largest delay + jitter), in MTU frames."""
    peak = 0.0
    for s in steps:
        if s.rate_bps < UNSHAPED_BPS:
            peak = max(peak, s.rate_bps * (s.delay_ms + jitter_ms) / 1000 / (MTU_WIRE_BYTES * 8))
    return int(peak) + 1


def netem_limit(port: Port) -> int:
    return port.queue_packets + port.delay_line_packets


def netem_args(port: Port, loss_pct: float, delay_ms: float) -> list[str]:
    args = ["netem", "limit", str(netem_limit(port))]
    if delay_ms or port.jitter_ms:
        args += ["delay", f"{delay_ms}ms"]
        if port.jitter_ms:
            args += [f"{port.jitter_ms}ms"]
    if loss_pct:
        args += ["loss", f"{loss_pct}%"]
    return args + ["rate", f"{int(UNSHAPED_BPS)}bit"]


def install(port: Port, first: Step) -> None:
    """Build the tc tree on ``port.ifname`` with the timeline's first state."""
    dev = port.ifname
    ns = port.netns_pid
    run(ns, ["tc", "qdisc", "replace", "dev", dev, "root", "handle", "1:", "htb", "default", "10", "r2q", "1"])
    run(ns, ["tc", "class", "add", "dev", dev, "parent", "1:", "classid", "1:10", "htb",
             "rate", f"{int(first.rate_bps)}bit", "ceil", f"{int(first.rate_bps)}bit",
             "burst", str(htb_burst(first.rate_bps)), "quantum", str(MTU_WIRE_BYTES)])
    run(ns, ["tc", "qdisc", "add", "dev", dev, "parent", "1:10", "handle", "10:", "tbf",
             "rate", f"{int(UNSHAPED_BPS)}bit", "burst", str(MTU_WIRE_BYTES), "limit", str(port.queue_packets)])
    if port.use_netem:
        leaf = netem_args(port, first.loss_pct if port.loss_mode == "netem" else 0.0, first.delay_ms)
    else:
        leaf = ["pfifo", "limit", str(port.queue_packets)]
    run(ns, ["tc", "qdisc", "add", "dev", dev, "parent", "10:1", "handle", "20:", *leaf])
    if first.gate != OPEN:
        rate, burst, limit = gate_params(first.gate, port.queue_packets)
        sock = netlink.TcSocket(ns)
        try:
            sock.change_tbf(dev, GATE, CLASS, rate, burst, limit)
        finally:
            sock.close()


def gate_params(gate: str, queue_packets: int) -> tuple[float, int, int]:
    """(rate bit/s, bucket bytes, queue limit in packets) of the TBF gate for each state.

    The bucket is always one MTU: TBF then splits TCP's GSO super-packets (which TCP builds even
    with offloads off) into wire-sized packets *before* HTB charges them, so the link serialises
    packet by packet instead of in 20-60 KB bursts. Closed, the rate is 1 byte/s (nothing leaves);
    drop also sets the queue limit to 0 so every arriving packet is dropped.
    """
    if gate == OPEN:
        return UNSHAPED_BPS, MTU_WIRE_BYTES, queue_packets
    if gate == HOLD:
        return 8.0, MTU_WIRE_BYTES, queue_packets
    if gate == DROP:
        return 8.0, MTU_WIRE_BYTES, 0
    raise ValueError(gate)


def _iptables_loss_rule(port: Port, loss_pct: float) -> list[str]:
    # A pure function of the loss, so the rule to delete can be rebuilt from the previous state.
    return [*port.loss_match, "-m", "statistic", "--mode", "random", "--probability", f"{loss_pct / 100:.6f}",
            "-m", "comment", "--comment", "testbed-loss", "-j", "DROP"]


def set_loss(port: Port, old_pct: float, new_pct: float) -> None:
    """Loss without netem (iptables' statistic match); netem loss changes with the netem state."""
    if port.loss_mode == "iptables":
        if old_pct > 0:
            run(port.loss_netns_pid, ["iptables", "-w", "-D", *_iptables_loss_rule(port, old_pct)], check=False)
        if new_pct > 0:
            run(port.loss_netns_pid, ["iptables", "-w", "-A", *_iptables_loss_rule(port, new_pct)])
    elif port.loss_mode != "netem" and new_pct > 0:
        raise CapabilityError(f"link {port.key}: loss requested but no loss mechanism is available")


class PortDriver:
    """Applies timeline steps to one port through netlink (rate, gate, netem delay/loss) or iptables (loss)."""

    def __init__(self, port: Port, sock: netlink.TcSocket, first: Step):
        self.port = port
        self.sock = sock
        self.state = first
        self._kick_sock: socket.socket | None = None
        self._kick_frame = b""

    def open_kick_socket(self) -> None:
        with netlink.in_netns(self.port.netns_pid):
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
            s.bind((self.port.ifname, 0))
        mac = s.getsockname()[4][:6]
        # dst == src == our own MAC: a host peer ignores it, a bridge sees it going back where it came from.
        self._kick_frame = mac + mac + struct.pack("!H", KICK_ETHERTYPE) + b"\0" * 46
        self._kick_sock = s

    def apply(self, step: Step) -> None:
        p = self.port
        if step.rate_bps != self.state.rate_bps:
            self.sock.change_htb_class(p.ifname, CLASS, ROOT, step.rate_bps, htb_burst(step.rate_bps))
        if step.gate != self.state.gate:
            rate, burst, limit = gate_params(step.gate, p.queue_packets)
            self.sock.change_tbf(p.ifname, GATE, CLASS, rate, burst, limit)
            if step.gate == OPEN and self._kick_sock is not None:
                self._kick_sock.send(self._kick_frame)
        netem_loss = p.loss_mode == "netem"
        loss_changed = step.loss_pct != self.state.loss_pct
        if p.use_netem and (step.delay_ms != self.state.delay_ms or (netem_loss and loss_changed)):
            self.sock.change_netem(p.ifname, NETEM, GATE_CLASS, step.delay_ms, p.jitter_ms,
                                   step.loss_pct if netem_loss else 0.0, netem_limit(p), UNSHAPED_BPS)
        if not netem_loss and loss_changed:
            set_loss(p, self.state.loss_pct, step.loss_pct)
        self.state = step

    def rewrite_rate(self) -> None:
        """Send the current rate again (no change on the link): warms the netlink path and lets the
        replayer measure what one change costs before the first scheduled one."""
        p = self.port
        self.sock.change_htb_class(p.ifname, CLASS, ROOT, self.state.rate_bps, htb_burst(self.state.rate_bps))

    def close(self) -> None:
        if self._kick_sock is not None:
            self._kick_sock.close()
