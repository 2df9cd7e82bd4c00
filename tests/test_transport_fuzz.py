"""Fuzzing (bounded): hypothesis-generated hostile messages against a real ``testbed serve`` subprocess.

After every case the server must be alive, answer a normal echo within 1 s, and every
reply must be a valid protocol message with a documented code. The long run is
``scripts/fuzz_server.py``; the generator and harness live in testbed/transport/fuzz.py.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, Phase, given, settings

from testbed.transport.fuzz import FuzzHarness, cases

CASES = 2000
MAX_RSS_GROWTH = 256 * 2**20  # one message may legitimately allocate up to 128 MiB while it is received


@pytest.fixture(scope="module")
def harness():
    fuzz = FuzzHarness(echo_deadline_s=1.0)
    yield fuzz
    fuzz.close()


def test_fuzzed_messages_never_stop_or_wedge_the_server(harness):
    @settings(max_examples=CASES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate, Phase.shrink])
    @given(cases())
    def one_case(case):
        harness.run(case)

    one_case()
    report = harness.report
    print(report.summary())
    assert report.cases >= CASES
    assert report.crashes == 0 and report.failed_echoes == 0 and report.invalid_replies == 0, report.first_failure
    assert report.max_rss_growth < MAX_RSS_GROWTH, report.summary()
    assert harness.proc.poll() is None
    # the families of issue 12 were generated and answered with documented codes
    assert report.codes.get("malformed_header", 0) > 0 and report.codes.get("result", 0) > 0
