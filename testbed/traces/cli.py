"""``testbed traces import|show|stats|plot|list``: convert, inspect and plot bandwidth traces."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

LIBRARY = Path(__file__).resolve().parents[2] / "traces"


def register(subparsers) -> None:
    parser = subparsers.add_parser("traces", help="import, inspect and plot bandwidth traces")
    sub = parser.add_subparsers(dest="traces_command", metavar="ACTION")
    parser.set_defaults(func=lambda args: parser.print_help() or 2)

    imp = sub.add_parser("import", help="convert a raw trace (or an --up/--down pair) to the normalized CSV")
    imp.add_argument("src", nargs="?", help="raw trace file (omit with --up/--down)")
    imp.add_argument("--up", help="file measuring the uplink (device->cloud)")
    imp.add_argument("--down", help="file measuring the downlink (cloud->device)")
    imp.add_argument("-o", "--output", required=True, help="normalized CSV to write")
    imp.add_argument("--format", dest="fmt", help="input format (default: detected from the content)")
    imp.add_argument("--window", type=float, default=0.1, help="Mahimahi bin width in seconds (default 0.1)")
    imp.add_argument("--column", help="CSV column to read (5Gophers carrier, G-NetTrack)")
    imp.add_argument("--direction", choices=("down", "up"), help="direction a one-direction file measured")
    imp.add_argument(
        "--slice", nargs=2, type=float, metavar=("START", "END"), help="keep [START, END) seconds"
    )
    for key in ("name", "source", "citation", "licence"):
        imp.add_argument(f"--{key}", help=f"provenance: {key}")
    imp.set_defaults(func=cmd_import)

    show = sub.add_parser("show", help="print a trace's header and first rows")
    show.add_argument("file")
    show.add_argument("-n", "--rows", type=int, default=10, help="rows to print (default 10)")
    show.add_argument("--format", dest="fmt")
    show.set_defaults(func=cmd_show)

    st = sub.add_parser("stats", help="table of per-direction statistics")
    st.add_argument("files", nargs="+")
    st.add_argument("--format", dest="fmt")
    st.add_argument("--markdown", action="store_true", help="print a Markdown table")
    st.set_defaults(func=cmd_stats)

    plot = sub.add_parser("plot", help="plot down and up rates vs time, outages shaded (PNG)")
    plot.add_argument("file")
    plot.add_argument("-o", "--output", required=True, help="PNG file to write")
    plot.add_argument("--format", dest="fmt")
    plot.add_argument(
        "--granularity", type=float, default=None, help="average into bins of this many seconds"
    )
    plot.set_defaults(func=cmd_plot)

    lst = sub.add_parser("list", help="the trace library (traces/*.csv) with statistics")
    lst.add_argument("directory", nargs="?", default=None, help=f"library folder (default {LIBRARY})")
    lst.set_defaults(func=cmd_list)


def _conversion_command(args: argparse.Namespace) -> str:
    words = ["testbed", "traces", "import"]
    if args.src:
        words.append(args.src)
    for flag in ("up", "down", "fmt", "column", "direction"):
        value = getattr(args, flag)
        if value:
            words += ["--format" if flag == "fmt" else f"--{flag}", value]
    if args.window != 0.1:
        words += ["--window", f"{args.window:g}"]
    if args.slice:
        words += ["--slice", *(f"{v:g}" for v in args.slice)]
    words += ["-o", args.output]
    return shlex.join(words)


def cmd_import(args: argparse.Namespace) -> int:
    from testbed.traces import TraceError, combine, load_trace, save_trace

    options = {"fmt": args.fmt, "window": args.window, "column": args.column}
    if args.src and (args.up or args.down):
        raise TraceError("give either SRC or --up/--down, not both")
    if args.src:
        trace = load_trace(args.src, direction=args.direction, **options)
    elif args.up and args.down:
        trace = combine(
            load_trace(args.up, direction="up", **options), load_trace(args.down, direction="down", **options)
        )
    else:
        raise TraceError("give a SRC file, or both --up and --down")
    if args.slice:
        trace = trace.slice(*args.slice)
    meta = dict(trace.meta)
    meta.setdefault("name", Path(args.output).stem)
    for key in ("name", "source", "citation", "licence"):
        if getattr(args, key):
            meta[key] = getattr(args, key)
    meta["conversion"] = _conversion_command(args)
    trace = type(trace)(
        trace.times, trace.down_mbps, trace.up_mbps, trace.duration, trace.rtt_ms, trace.loss, meta
    )
    save_trace(trace, args.output)
    print(f"wrote {args.output}: {len(trace)} rows, {trace.duration:g} s")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from testbed.traces import load_trace

    trace = load_trace(args.file, fmt=args.fmt)
    print(f"# file: {args.file}")
    for key, value in trace.meta.items():
        print(f"# {key}: {value}")
    print(f"# duration_s: {trace.duration:g}  rows: {len(trace)}")
    columns = ["time_s", "down_mbps", "up_mbps"] + [
        c for c in ("rtt_ms", "loss") if getattr(trace, c) is not None
    ]
    print(",".join(columns))
    for i in range(min(args.rows, len(trace))):
        print(",".join(f"{getattr(trace, 'times' if c == 'time_s' else c)[i]:.6g}" for c in columns))
    if len(trace) > args.rows:
        print(f"... ({len(trace) - args.rows} more rows)")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from testbed.traces import load_trace
    from testbed.traces.stats import format_table, stats_rows

    rows = []
    for file in args.files:
        rows += stats_rows(Path(file).name, load_trace(file, fmt=args.fmt))
    print(format_table(rows, markdown=args.markdown))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from testbed.traces import TraceError, load_trace
    from testbed.traces.stats import format_table, stats_rows

    directory = Path(args.directory) if args.directory else LIBRARY
    files = sorted(directory.glob("*.csv"))
    if not files:
        raise TraceError(f"no *.csv traces in {directory}")
    rows = []
    for file in files:
        trace = load_trace(file, fmt="csv")
        rows += stats_rows(file.stem, trace)
    print(format_table(rows))
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from testbed.traces import load_trace
    from testbed.traces.stats import OUTAGE_MBPS, stats

    trace = load_trace(args.file, fmt=args.fmt)
    means = {d: s["mean"] for d, s in stats(trace).items()}
    if args.granularity:
        trace = trace.resample(args.granularity)
    fig, ax = plt.subplots(figsize=(10, 3.5))
    for direction, color in (("down", "tab:blue"), ("up", "tab:orange")):
        rates = trace.rates(direction)
        ax.step(
            list(trace.times) + [trace.duration],
            list(rates) + [rates[-1]],
            where="post",
            color=color,
            lw=0.8,
            label=f"{direction} (mean {means[direction]:.3g} Mbit/s)",
        )
    for i, (start, end) in enumerate(trace.outages("both", OUTAGE_MBPS)):
        label = f"outage (< {OUTAGE_MBPS:g} Mbit/s)" if i == 0 else None
        ax.axvspan(start, end, color="red", alpha=0.2, lw=0, label=label)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("rate (Mbit/s)")
    ax.set_xlim(0, trace.duration)
    ax.set_ylim(bottom=0)
    ax.set_title(trace.name)
    ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=120)
    plt.close(fig)
    print(f"wrote {args.output}")
    return 0
