"""Real-time scheduling for the instants that must be on time: releasing a paced result.

A paced device or server sleeps until the profiled finish, then releases the result. Under the
default scheduler a sleeper that wakes while both cores run other agents' compute waits for its
turn (milliseconds with dozens of agents on 2 cores). The thread therefore waits for a release
as SCHED_FIFO and drops back to SCHED_OTHER before it computes again: the waits and the release
itself (a record write or a send) are short, so real time costs the rest of the machine little,
and the kernel's RT throttling (``sched_rt_runtime_us``) bounds it anyway.

A paced device also *computes* as SCHED_FIFO, at a lower priority than releases (``compute()``):
the host emulates one accelerator per device on a few cores, and a compute that runs to completion
in arrival order finishes within its profiled time far more often than computes time-sliced against
each other by the default scheduler. Measured (``benchmarks/device_emulation.py``, 32 staggered
devices on 2 cores): 2.3 % of results late under the default scheduler, 0.09 % with real-time compute.
When the host is overloaded the kernel's RT throttling still leaves 5 % of each core to the rest.

The priorities stay below the trace replayer's (20): a link change outranks a device release, and a
release outranks a compute.
Without the right (not root, or a cgroup without RT runtime) the thread stays as it is and the
caller records that its releases ran unprivileged.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("testbed.runtime.realtime")
RELEASE_PRIORITY = 10
COMPUTE_PRIORITY = 5


class ReleaseScheduling:
    """Switches the calling thread between SCHED_FIFO (waiting to release) and SCHED_OTHER."""

    def __init__(self, priority: int = RELEASE_PRIORITY):
        self.priority = priority
        self.available = hasattr(os, "sched_setscheduler")
        self.reason = None if self.available else "no sched_setscheduler on this platform"

    def enter(self) -> bool:
        """Wait as real time from now on; False (once logged) when the kernel refuses."""
        return self._fifo(self.priority)

    def compute(self) -> bool:
        """Compute as real time (below releases) from now on; False when the kernel refuses."""
        return self._fifo(COMPUTE_PRIORITY)

    def _fifo(self, priority: int) -> bool:
        if not self.available:
            return False
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
        except OSError as exc:  # EPERM: not root, or the cpu cgroup has no RT runtime
            self.available, self.reason = False, f"{exc.strerror or exc}"
            log.warning("real-time scheduling unavailable (%s): paced computes and releases run under the "
                        "default scheduler", self.reason)
            return False
        return True

    def leave(self) -> None:
        if self.available:
            try:
                os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
            except OSError:  # pragma: no cover - dropping priority is always allowed
                pass
