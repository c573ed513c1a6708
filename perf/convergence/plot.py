#!/usr/bin/env python3
"""Plots and tables of the convergence study (perf/convergence/run_study.py).

    python3 perf/convergence/plot.py [--data docs/data/convergence] [--plots docs/plots]

Writes convergence-loss-vs-steps.png and convergence-loss-vs-bytes.png and prints a
markdown table: final validation loss, mean ± standard deviation over seeds, its
difference to fp32 against the seeds' noise, and the bytes each rank sends per step.

Bytes are a model of each scheme's wire cost, not a measurement: per value of the
gradient, ring-style reductions move 2(n-1)/n times the encoded size out of each rank
(fp32 4 B, fp16 2 B, nat 1.125 B, dither_nat s=8 5 bits (0.625 B) plus one norm byte per
bucket); top-k goes through allgather, (n-1) times each rank's encoding of 1% of the
values (4 B index + 1.125 B nat value each); PowerSGD rank r moves P (rows x r) and Q
(columns x r) in fp32 for each matrix it compresses, and every other tensor in fp32, by
the ring factor too.
"""

import argparse
import json
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ORDER = ["fp32", "fp16", "powersgd", "nat", "nat+ef", "dither_nat", "topk1%+ef", "control:topk1%"]


def load(data):
    runs = defaultdict(list)
    for path in sorted(Path(data).glob("*-seed*.json")):
        record = json.loads(path.read_text())
        runs[record["config"]].append(record)
    if not runs:
        raise SystemExit(f"plot.py: no runs in {data} (run perf/convergence/run_study.py first)")
    return runs


def parameter_shapes(args):
    sys.path.insert(0, str(ROOT / "examples"))
    import torch
    from ddp_train import ByteTransformer

    torch.manual_seed(0)
    model = ByteTransformer(args["width"], args["layers"], context=args["context"])
    return [tuple(p.shape) for p in model.parameters()]


def bytes_per_step(config, record):
    """Bytes one rank sends per step under `config` (a model, see the module's doc)."""
    n = record["world_size"]
    values = record["parameters"]
    ring = 2 * (n - 1) / n
    if config == "fp32":
        return ring * 4 * values
    if config == "fp16":
        return ring * 2 * values
    if config in ("nat", "nat+ef"):
        return ring * 1.125 * values
    if config == "dither_nat":
        return ring * (0.625 * values + values / 512)
    if config.startswith(("topk", "control:topk")):
        return (n - 1) * 0.01 * values * (4 + 1.125)
    if config == "powersgd":
        rank = 1
        total = 0.0
        for shape in parameter_shapes(record["args"]):
            if len(shape) < 2:
                total += 4 * math.prod(shape)
                continue
            rows, columns = shape[0], math.prod(shape[1:])
            compressed = (rows + columns) * rank
            # powerSGD_hook leaves a matrix uncompressed where that would not halve it.
            total += 4 * (compressed if compressed * 2 < rows * columns else rows * columns)
        return ring * total
    raise ValueError(config)


def curves(records):
    steps = [entry["step"] for entry in records[0]["history"]]
    losses = [[entry["validation_loss"] for entry in record["history"]] for record in records]
    means = [statistics.fmean(column) for column in zip(*losses)]
    stds = [statistics.stdev(column) if len(column) > 1 else 0.0 for column in zip(*losses)]
    return steps, means, stds


def table(runs):
    names = [name for name in ORDER if name in runs] + [name for name in runs if name not in ORDER]
    finals = {name: [record["history"][-1]["validation_loss"] for record in runs[name]] for name in names}
    reference = finals.get("fp32")
    lines = ["| scheme | seeds | final validation loss (nats/byte) | vs fp32 | beyond seed noise? | "
             "MB sent per rank and step | fewer bytes than fp32 |",
             "| --- | ---: | --- | ---: | --- | ---: | ---: |"]
    fp32_bytes = bytes_per_step("fp32", runs[names[0]][0])
    for name in names:
        values = finals[name]
        mean = statistics.fmean(values)
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        sent = bytes_per_step(name, runs[name][0])
        if reference and name != "fp32":
            difference = mean - statistics.fmean(reference)
            # Two standard errors of the difference of two means over seeds.
            noise = 2 * math.sqrt((std ** 2) / len(values) + statistics.stdev(reference) ** 2 / len(reference)) \
                if len(values) > 1 and len(reference) > 1 else float("nan")
            verdict = "-" if math.isnan(noise) else ("yes" if abs(difference) > noise else "no")
            versus = f"{difference:+.4f} (2 s.e. {noise:.4f})"
        else:
            versus, verdict = "-", "-"
        lines.append(f"| {name} | {len(values)} | {mean:.4f} ± {std:.4f} | {versus} | {verdict} | "
                     f"{sent / 1e6:.3f} | {fp32_bytes / sent:.1f}x |")
    return "\n".join(lines)


def plot(runs, plots):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [name for name in ORDER if name in runs] + [name for name in runs if name not in ORDER]
    first = runs[names[0]][0]
    setup = (f"{first['parameters'] / 1e6:.2f} M-parameter byte transformer, {first['world_size']} ranks, "
             f"{first['args']['batch']}x{first['args']['context']} bytes per rank and step, "
             f"mean over {len(runs[names[0]])} seeds (band: ±1 std)")
    for kind in ("steps", "bytes"):
        figure, axis = plt.subplots(figsize=(8, 5))
        for name in names:
            steps, means, stds = curves(runs[name])
            x = steps if kind == "steps" else [step * bytes_per_step(name, runs[name][0]) / 1e9 for step in steps]
            style = "--" if name.startswith("control") else "-"
            axis.plot(x, means, style, label=name)
            axis.fill_between(x, [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)],
                              alpha=0.15)
        if kind == "steps":
            axis.set_xlabel("training step")
        else:
            axis.set_xlabel("GB sent per rank (model of each scheme's wire cost)")
            axis.set_xscale("log")
        axis.set_ylabel("validation loss (nats/byte)")
        axis.set_title(setup, fontsize=8)
        axis.legend(fontsize=8)
        axis.grid(alpha=0.3)
        figure.tight_layout()
        path = Path(plots) / f"convergence-loss-vs-{kind}.png"
        figure.savefig(path, dpi=110)
        print(f"plot.py: wrote {path}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(ROOT / "docs" / "data" / "convergence"))
    parser.add_argument("--plots", default=str(ROOT / "docs" / "plots"))
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args(argv)
    runs = load(args.data)
    print(table(runs))
    if not args.no_plots:
        plot(runs, args.plots)


if __name__ == "__main__":
    main()
