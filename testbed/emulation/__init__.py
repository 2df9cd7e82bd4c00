"""Emulated networks: Mininet topologies shaped with tc, replaying traces, with faults and cleanup."""

from testbed.emulation.capabilities import Capabilities, probe
from testbed.emulation.emulation import Emulation
from testbed.emulation.faults import Fault, outage, parse_fault
from testbed.emulation.topology import LinkSpec, Topology, load_topology, parse_topology

__all__ = ["Capabilities", "Emulation", "Fault", "LinkSpec", "Topology", "load_topology", "outage",
           "parse_fault", "parse_topology", "probe"]
