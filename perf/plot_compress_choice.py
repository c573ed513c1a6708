#!/usr/bin/env python3
"""Compress only where it pays: draws, for each link, the speed of codec nat
under algo auto against the faster of gloo::allreduce and our exact path
(codec none under auto), measured in the same run, with each size marked by
the path auto took (compressed, or exact). Also prints the figures as a
markdown table.

    build/perf/cc_allreduce_perf --cluster 4 --link 1gbit -b 4K -e 256M -f 4 \\
        --codec 'nat;none' --algo auto --rounds 3 --json 1gbit.json
    python3 perf/plot_compress_choice.py loopback.json 10gbit.json 1gbit.json \\
        --out docs/plots/compress-choice.png

Needs matplotlib (python3-matplotlib).
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
    sys.exit("plot_compress_choice.py needs matplotlib: apt-get install python3-matplotlib")

TARGET = 0.95


def size_label(size):
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size // scale} {unit}"
    return f"{size} B"


def points_of(path):
    """[(bytes, gloo_us, none_us, nat_us, nat_algo)] of one --json file, and its link."""
    with open(path) as handle:
        rows = json.load(handle)
    by_size = defaultdict(dict)
    link = None
    for row in rows:
        link = row["link"]
        if row["engine"] == "gloo":
            by_size[row["bytes"]]["gloo"] = row["time_us"]
        elif row["engine"] == "none" and row["algo"].startswith("auto"):
            by_size[row["bytes"]]["none"] = row["time_us"]
        elif row["engine"] == "nat" and row["algo"].startswith("auto"):
            by_size[row["bytes"]]["nat"] = row["time_us"]
            by_size[row["bytes"]]["algo"] = row["algo"]
    points = []
    for size in sorted(by_size):
        cell = by_size[size]
        if all(key in cell for key in ("gloo", "none", "nat")):
            points.append((size, cell["gloo"], cell["none"], cell["nat"], cell["algo"]))
    if not points:
        sys.exit(f"{path}: no sizes with gloo, none under auto and nat under auto")
    return link, points


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("json", nargs="+", help="cc_allreduce_perf --json files, one per link")
    parser.add_argument("--out", required=True, help="the PNG to write")
    args = parser.parse_args()
    links = [points_of(path) for path in args.json]

    figure, axes_list = plt.subplots(1, len(links), figsize=(5.2 * len(links), 4.3), sharey=True, squeeze=False)
    print("| link | size | gloo us | exact path us | nat (auto) us | auto's path | vs faster baseline | vs gloo |")
    print("| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |")
    for axes, (link, points) in zip(axes_list[0], links):
        sizes = [p[0] for p in points]
        vs_best = [min(p[1], p[2]) / p[3] for p in points]
        vs_gloo = [p[1] / p[3] for p in points]
        exact = [",exact" in p[4] for p in points]
        axes.plot(sizes, vs_best, color="C0", label="nat (auto) vs faster of gloo and exact path")
        axes.plot(sizes, vs_gloo, color="C1", linestyle="--", label="nat (auto) vs gloo")
        for size, value, was_exact in zip(sizes, vs_best, exact):
            axes.plot([size], [value], marker="s" if was_exact else "o", markersize=7,
                      markerfacecolor="white" if was_exact else "C0", markeredgecolor="C0", linestyle="none")
        axes.plot([], [], marker="o", color="C0", linestyle="none", label="auto compressed")
        axes.plot([], [], marker="s", markerfacecolor="white", markeredgecolor="C0", linestyle="none",
                  label="auto went exact")
        axes.axhline(TARGET, color="gray", linewidth=0.8, linestyle=":", label=f"target {TARGET}")
        axes.axhline(1.0, color="gray", linewidth=0.8, linestyle="--")
        axes.set_xscale("log", base=2)
        axes.set_xlabel("message size (bytes of float32)")
        axes.set_title(f"4 ranks, {link}")
        axes.grid(True, which="both", alpha=0.3)
        for p, best, gloo in zip(points, vs_best, vs_gloo):
            print(f"| {link} | {size_label(p[0])} | {p[1]:.0f} | {p[2]:.0f} | {p[3]:.0f} | {p[4]} | "
                  f"{best:.2f}x | {gloo:.2f}x |")
    axes_list[0][0].set_ylabel("speed relative to the baseline")
    axes_list[0][-1].legend(fontsize=7, loc="upper left")
    figure.suptitle("codec nat under algo auto: compress only where it pays")
    figure.tight_layout()
    figure.savefig(args.out, dpi=120)
    print("wrote", args.out, file=sys.stderr)


if __name__ == "__main__":
    main()
