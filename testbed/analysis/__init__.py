"""Analysis of result files only (no root, no Mininet): metrics, tables, figures, paper comparisons.

    from testbed.analysis import build_report
    rep = build_report("results/quickstart/20250101-120000")   # metrics.csv/.md, figures/, report.md
    print(rep.text)
"""

from testbed.analysis.metrics import aggregate, load_units, mean_ci, session_metrics
from testbed.analysis.report import Report, build_report, find_run_dir

__all__ = ["Report", "aggregate", "build_report", "find_run_dir", "load_units", "mean_ci", "session_metrics"]
