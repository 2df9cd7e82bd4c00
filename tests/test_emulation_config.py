"""Topology, fault and timeline logic (no root needed)."""

from __future__ import annotations

import struct
from dataclasses import replace
from pathlib import Path

import pytest

from testbed.emulation import capabilities, load_topology, netlink, parse_fault, parse_topology, schedule
from testbed.emulation.emulation import Emulation
from testbed.errors import CapabilityError, ConfigError
from testbed.traces import constant, steps

TOPOLOGIES = Path(__file__).resolve().parents[1] / "topologies"


def minimal(**link) -> dict:
    return {"hosts": {"device": {"role": "device"}, "cloud": {"role": "cloud"}},
            "links": {"access": {"ends": ["device", "cloud"], **link}}}


@pytest.mark.parametrize("name", ["device-cloud", "device-edge-cloud", "fleet"])
def test_shipped_topologies_load(name):
    topo = load_topology(TOPOLOGIES / f"{name}.yaml")
    assert topo.hosts_with_role("cloud") and topo.hosts_with_role("device")


def test_device_cloud_has_the_documented_shape():
    topo = load_topology(TOPOLOGIES / "device-cloud.yaml")
    link = topo.links["access"]
    assert (link.a, link.b) == ("device", "cloud")
    assert link.sender("up") == "device" and link.sender("down") == "cloud"
    assert topo.hosts["device"].cpu < topo.hosts["cloud"].cpu


def test_fleet_expands_devices_from_a_parameter():
    topo = load_topology(TOPOLOGIES / "fleet.yaml", params={"n_devices": 3})
    assert topo.hosts_with_role("device") == ["device1", "device2", "device3"]
    assert [n for n in topo.links if n.startswith("radio")] == ["radio1", "radio2", "radio3"]
    assert topo.links["radio2"].a == "device2"


def test_per_direction_values_override_link_values():
    topo = parse_topology(minimal(bw_mbps=10, up={"bw_mbps": 2, "queue_packets": 50}))
    link = topo.links["access"]
    assert (link.up.bw_mbps, link.up.queue_packets) == (2, 50)
    assert link.down.bw_mbps == 10


@pytest.mark.parametrize("raw, where, what", [
    ({"hosts": {"d": {"role": "phone"}}, "links": {}}, "hosts.d.role", "must be one of"),
    (minimal(bw_mbps="fast"), "links.access.up.bw_mbps", "expected a number"),
    (minimal(bw_mbps=-1), "links.access.up.bw_mbps", "below the minimum"),
    (minimal(colour="red"), "links.access.colour", "unknown key"),
    (minimal(queue_packets=2.5), "links.access.up.queue_packets", "integer"),
    ({**minimal(), "links": {"access": {"ends": ["device", "mars"]}}}, "links.access.ends", "unknown node 'mars'"),
    ({**minimal(), "links": {"access": {"ends": ["device"]}}}, "links.access.ends", "two node names"),
    ({"hosts": {"device": {"role": "device"}, "cloud": {"role": "cloud"}, "edge": {"role": "edge"}},
      "links": {"access": {"ends": ["device", "cloud"]}}}, "links", "host 'edge' has 0 links"),
    ({**minimal(), "hosts": {"device-1": {"role": "device"}}}, "hosts.device-1", "must start with a letter"),
    ({**minimal(bw_mbps="${rate}")}, "links.access.bw_mbps", "unknown parameter ${rate}"),
    ({**minimal(), "switch": "ovz"}, "switch", "must be one of linuxbridge, ovs; got 'ovz'"),
])
def test_bad_topologies_name_the_key(raw, where, what):
    with pytest.raises(ConfigError) as err:
        parse_topology(raw, source="topo.yaml")
    assert where in str(err.value) and what in str(err.value)
    assert str(err.value).startswith("topo.yaml")


def test_bad_yaml_names_the_line(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("hosts:\n  device: {role: device\nlinks: {}\n")
    with pytest.raises(ConfigError, match=r"t\.yaml:\d+: not valid YAML"):
        load_topology(path)


def test_missing_topology_file():
    with pytest.raises(ConfigError, match="topology file not found"):
        load_topology("/nonexistent/topo.yaml")


def test_unknown_topology_parameter_lists_known_ones():
    with pytest.raises(ConfigError, match="n_devices"):
        load_topology(TOPOLOGIES / "fleet.yaml", params={"devices": 3})


@pytest.mark.parametrize("raw, where", [
    ({"kind": "quake", "link": "access", "start": 1, "end": 2}, "faults[0].kind"),
    ({"kind": "outage", "link": "access", "start": 3, "end": 2}, "faults[0].end"),
    ({"kind": "outage", "link": "access", "start": 1}, "faults[0].end"),
    ({"kind": "outage", "link": "wan", "start": 1, "end": 2}, "faults[0].link"),
    ({"kind": "outage", "link": "access", "start": 1, "end": 2, "mode": "lose"}, "faults[0].mode"),
    ({"kind": "flap", "link": "access", "start": 1, "end": 9, "period": 1, "down": 2}, "faults[0].down"),
    ({"kind": "loss", "link": "access", "start": 1, "end": 2, "loss_pct": 0}, "faults[0].loss_pct"),
    ({"kind": "loss", "link": "access", "start": "soon", "end": 2, "loss_pct": 5}, "faults[0].start"),
])
def test_bad_faults_name_the_key(raw, where):
    with pytest.raises(ConfigError) as err:
        parse_fault(raw, "faults[0]", links={"access"})
    assert str(err.value).startswith(where)


def test_flap_windows():
    f = parse_fault({"kind": "flap", "link": "access", "start": 10, "end": 20, "period": 4, "down": 1})
    assert f.down_windows() == [(10, 11), (14, 15), (18, 19)]


def test_timeline_holds_zero_rate_steps_and_floors_tiny_rates():
    trace = steps([(0, 5, 5), (1, 0, 5), (2, 0.1, 5), (3, 0.05, 5), (4, 8, 5)], duration=5)
    tl = schedule.build_timeline(trace, "down", None, 0.0, [], "access", granularity=0.1, horizon=5)
    floor = schedule.floor_bps(0.1)
    by_t = {s.t: s for s in tl}
    assert by_t[0].gate == "open" and by_t[0].rate_bps == 5e6
    assert by_t[1].gate == "hold"  # a zero-rate step is an outage
    assert by_t[2].gate == "open" and by_t[2].rate_bps == floor  # 0.1 Mbit/s is rounded up to one MTU per step
    assert by_t[3].gate == "hold"  # below half the floor: an outage
    assert by_t[4].gate == "open" and by_t[4].rate_bps == 8e6
    assert all(s.rate_bps >= floor for s in tl)  # HTB never runs below the floor (no time debt)


def test_timeline_merges_faults_and_loops_the_trace():
    trace = steps([(0, 10, 2), (2, 4, 2)], duration=4)
    faults = [parse_fault({"kind": "outage", "link": "access", "start": 5, "end": 6, "mode": "drop"}),
              parse_fault({"kind": "loss", "link": "access", "start": 7, "end": 7.5, "loss_pct": 10,
                           "direction": "down"})]
    tl = schedule.build_timeline(trace, "down", None, 0.0, faults, "access", horizon=10)
    assert [(s.t, s.rate_bps / 1e6, s.gate, s.loss_pct) for s in tl] == [
        (0, 10, "open", 0), (2, 4, "open", 0), (4, 10, "open", 0), (5, 10, "drop", 0), (6, 4, "open", 0),
        (7, 4, "open", 10), (7.5, 4, "open", 0), (8, 10, "open", 0)]
    assert schedule.expected_rate_bps(tl, 5.5) == 0 and schedule.expected_rate_bps(tl, 6.5) == 4e6
    up = schedule.build_timeline(trace, "up", None, 0.0, faults, "access", horizon=10)
    assert all(s.loss_pct == 0 for s in up) and any(s.gate == "drop" for s in up)


def test_static_rate_without_trace_is_one_step():
    tl = schedule.build_timeline(None, "up", 20e6, 0.0, [], "access")
    assert [(s.t, s.rate_bps, s.gate) for s in tl] == [(0.0, 20e6, "open")]


def test_htb_netlink_options_encode_rate_and_burst():
    opts = netlink.htb_class_options(8e6, 15000)
    length, kind = struct.unpack_from("HH", opts)
    assert kind == netlink.TCA_HTB_PARMS
    rate = struct.unpack_from("I", opts, 4 + 8)[0]
    buffer_ticks = struct.unpack_from("I", opts, 4 + 24)[0]
    assert rate == 1_000_000  # bytes/s
    assert buffer_ticks * netlink.NS_PER_TICK == pytest.approx(15000 / 1e6 * 1e9, rel=1e-3)


def _caps(**over):
    full = dict(root=True, mnexec=True, mininet=True, htb=True, tbf=True, netem=True, ovs=False,
                linux_bridge=True, cgroup_cpu="v1", iptables_statistic=True, ethtool=True)
    return capabilities.Capabilities(**{**full, **over})


def test_delay_without_netem_is_refused_up_front():
    topo = parse_topology(minimal(delay_ms=20), source="t.yaml")
    with pytest.raises(CapabilityError, match=r"links\.access\.up asks for delay 20.0 ms.*no sch_netem"):
        Emulation(topo, caps=_caps(netem=False))


def test_loss_without_netem_or_iptables_is_refused():
    topo = parse_topology(minimal(loss_pct=5))
    with pytest.raises(CapabilityError, match="loss asked for"):
        Emulation(topo, caps=_caps(netem=False, iptables_statistic=False))
    Emulation(topo, caps=_caps(netem=False))  # the iptables fallback is enough


def test_switch_kind_comes_from_the_topology_and_ovs_needs_open_vswitch():
    assert parse_topology(minimal()).switch == "linuxbridge"
    fleet = load_topology(TOPOLOGIES / "fleet.yaml", params={"n_devices": 2, "switch": "ovs"})
    assert fleet.switch == "ovs"
    assert Emulation(fleet, caps=_caps(ovs=True)).switch == "ovs"
    assert Emulation(fleet, caps=_caps(ovs=True), switch="linuxbridge").switch == "linuxbridge"  # caller's choice wins
    with pytest.raises(CapabilityError, match=r"fleet\.yaml: switch: ovs .*openvswitch kernel module and a running "
                                              r"ovs-vswitchd"):
        Emulation(fleet, caps=_caps(ovs=False))


def test_this_kernels_refusals_match_the_probe():
    caps = capabilities.probe()
    topo = parse_topology(minimal(delay_ms=5))
    if caps.netem:
        pytest.skip("this kernel has sch_netem: delay can be emulated")
    with pytest.raises(CapabilityError):
        Emulation(topo, caps=replace(caps, root=True, mininet=True, mnexec=True, htb=True, tbf=True))


def test_unknown_trace_link_and_bad_granularity():
    topo = parse_topology(minimal())
    with pytest.raises(ConfigError, match="unknown link 'wan'"):
        Emulation(topo, traces={"wan": constant(1, 1, 10)}, caps=_caps())
    with pytest.raises(ConfigError, match="granularity"):
        Emulation(topo, granularity=0.001, caps=_caps())


def with_devices(device: dict, count: int | None = None) -> dict:
    raw = minimal()
    raw["hosts"]["device"] = {"role": "device", "device": device, **({"count": count} if count else {})}
    return raw


def test_hosts_carry_device_profiles_and_a_fleet_cycles_a_list():
    topo = parse_topology(with_devices({"profile": "raspberry_pi4"}))
    assert topo.hosts["device"].profile == "raspberry_pi4" and topo.hosts["cloud"].profile is None
    fleet = load_topology(TOPOLOGIES / "fleet.yaml", params={"n_devices": 4})
    assert [fleet.hosts[f"device{i}"].profile for i in range(1, 5)] == [
        "raspberry_pi4", "pixel3", "jetson_nano", "raspberry_pi4"]
    cpu_mode = load_topology(TOPOLOGIES / "device-cloud.yaml", params={"device_profile": None})
    assert cpu_mode.hosts["device"].profile is None and cpu_mode.hosts["device"].cpu == 0.5
    assert parse_topology(with_devices({"cpu": 0.25})).hosts["device"].cpu == 0.25


@pytest.mark.parametrize("device, count, where, what", [
    ({"profile": "commodore64"}, None, "hosts.device.device.profile", "unknown device profile 'commodore64'; known"),
    ({"profile": ["raspberry_pi4", "abacus"]}, 2, "hosts.device.device.profile[1]", "known profiles: "),
    ({"profile": ["raspberry_pi4"]}, None, "hosts.device.device.profile", "counted host group"),
    ({"speed": 3}, None, "hosts.device.device.speed", "unknown key; allowed: profile, workers, cpu"),
    ({"cpu": -1}, None, "hosts.device.device.cpu", "below the minimum"),
])
def test_bad_device_keys_name_the_key_and_list_profiles(device, count, where, what):
    with pytest.raises(ConfigError) as err:
        parse_topology(with_devices(device, count), source="topo.yaml")
    assert str(err.value).startswith(f"topo.yaml: {where}") and what in str(err.value)
    if "known profiles" in str(err.value):
        assert "raspberry_pi4" in str(err.value).split("known profiles: ")[1]


def test_a_change_whose_ack_was_lost_to_enobufs_is_sent_again():
    """ENOBUFS (seen in the stock-kernel VM) leaves a change's outcome unknown: the idempotent change is
    resent and its own ACK, not a stale one, ends the request. A kernel-side condition this host cannot
    provoke on demand, so the socket is a scripted stand-in."""
    import errno
    import struct

    def ack(seq, err=0):
        return struct.pack("IHHII", 36, netlink.NLMSG_ERROR, 0, seq, 0) + struct.pack("i", err) + b"\0" * 16

    class Scripted:
        def __init__(self, replies):
            self.replies, self.sent = list(replies), []

        def send(self, data):
            self.sent.append(struct.unpack_from("IHHII", data)[3])

        def recv(self, _size):
            reply = self.replies.pop(0)
            if isinstance(reply, Exception):
                raise reply
            return reply

    sock = netlink.TcSocket.__new__(netlink.TcSocket)
    sock.seq, sock.enobufs_retries = 0, 0
    sock.sock = Scripted([OSError(errno.ENOBUFS, "No buffer space available"), ack(1), ack(2)])
    sock._request(netlink.RTM_NEWQDISC, b"")
    assert sock.sock.sent == [1, 2] and sock.enobufs_retries == 1  # ack(1) came late: ignored
    # an ENOBUFS in the ACK itself is retried too; any other error is raised at once
    sock.sock = Scripted([ack(3, -errno.ENOBUFS), ack(4)])
    sock._request(netlink.RTM_NEWQDISC, b"")
    sock.sock = Scripted([ack(5, -errno.EINVAL)])
    with pytest.raises(netlink.NetlinkError, match="Invalid argument"):
        sock._request(netlink.RTM_NEWQDISC, b"")
    # and it gives up after ENOBUFS_RETRIES resends
    sock.sock = Scripted([OSError(errno.ENOBUFS, "x")] * (netlink.ENOBUFS_RETRIES + 1))
    with pytest.raises(OSError):
        sock._request(netlink.RTM_NEWQDISC, b"")
