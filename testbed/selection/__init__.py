"""Device-aware optimisation on the 18 measured devices (issue 11).

* ``latency`` -- the measured table (1,999 NAS-Bench-201 networks x 18 devices) and its provenance.
* ``monotonicity`` -- pairwise rank correlation (Spearman, Kendall) between devices' latencies.
* ``candidates`` -- the candidate networks and their cached Fashion-MNIST accuracies.
* ``proxy`` -- proxy-device selection vs the per-device oracle and one network for every device.
* ``reproduce`` -- the data-only reproductions behind ``testbed reproduce device-monotonicity`` and
  ``testbed reproduce device-aware-selection``.

The formulation is documented in ``docs/device-aware.md``.
"""
