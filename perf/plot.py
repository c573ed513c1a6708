#!/usr/bin/env python3
"""Draws cc_allreduce_perf --json results: time, bus bandwidth and speedup
against message size, one line per engine (gloo baseline, none, codecs).

    python3 perf/plot.py results.json [more.json ...] --out docs/plots/name

writes name-time.png, name-busbw.png and name-speedup.png. Needs matplotlib
(`pip install matplotlib` or Debian's python3-matplotlib).
"""
import argparse
import json
import sys
from collections import defaultdict

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    sys.exit("plot.py needs matplotlib: pip install matplotlib (or apt-get install python3-matplotlib)")


def load(paths):
    rows = []
    for path in paths:
        with open(path) as handle:
            rows.extend(json.load(handle))
    if not rows:
        sys.exit("no rows in " + ", ".join(paths))
    return rows


def series(rows, key):
    """{(engine, nranks, link): [(bytes, value), ...]} sorted by size."""
    lines = defaultdict(list)
    for row in rows:
        lines[(row["engine"], row["nranks"], row["link"])].append((row["bytes"], row[key]))
    return {label: sorted(points) for label, points in lines.items()}


def draw(rows, key, ylabel, title, path, logy):
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for (engine, nranks, link), points in sorted(series(rows, key).items()):
        if key == "speedup_vs_gloo" and engine == "gloo":
            continue
        sizes = [p[0] for p in points]
        values = [p[1] for p in points]
        axes.plot(sizes, values, marker="o", label=f"{engine} ({nranks} ranks, {link})")
    axes.set_xscale("log", base=2)
    if logy:
        axes.set_yscale("log")
    if key == "speedup_vs_gloo":
        axes.axhline(1.0, color="gray", linewidth=0.8, linestyle="--")
        axes.axhline(32 / 9, color="gray", linewidth=0.8, linestyle=":", label="32/9 (nat limit)")
    axes.set_xlabel("message size (bytes of float32)")
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    print("wrote", path)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("json", nargs="+", help="files written by cc_allreduce_perf --json")
    parser.add_argument("--out", required=True, help="output prefix, e.g. docs/plots/cluster-4x1gbit")
    parser.add_argument("--title", default="compressed allreduce", help="title prefix")
    args = parser.parse_args()
    rows = load(args.json)
    draw(rows, "time_us", "time per allreduce (us)", args.title + ": time", args.out + "-time.png", True)
    draw(rows, "busbw_gbs", "bus bandwidth (GB/s)", args.title + ": bus bandwidth", args.out + "-busbw.png", False)
    draw(rows, "speedup_vs_gloo", "speedup vs gloo::allreduce", args.title + ": speedup", args.out + "-speedup.png", False)


if __name__ == "__main__":
    main()
