#!/usr/bin/env python3
"""Plots and the table of the convergence study (perf/convergence/run_study.py).

    build/venv/bin/python perf/convergence/plot.py [--data docs/data/convergence] [--plots docs/plots]

Writes convergence-loss-vs-steps.png and convergence-loss-vs-bytes.png (validation loss,
mean over seeds, band ±1 standard deviation) and prints a markdown table: final validation
loss, mean ± standard deviation over seeds; its difference to fp32, seed by seed (runs of
one seed share the initialisation, the batches and the codec's key) and whether the mean
difference exceeds the seeds' noise (two standard errors of the mean paired difference,
over the seeds both ran);
and the bytes each rank sends per step.

Bytes are a MODEL of each scheme's wire cost, not a measurement (`wire_model`): the
encoded size of the gradient (its `parameters` float32 values) times how often a rank
sends it. Ring-style reductions (DDP's own gloo allreduce, assumed ring; compressedcoll's
ring) send 2(n-1)/n of the encoded vector per rank; compressedcoll's allgather (top-k)
sends (n-1) times the rank's own encoding. Encodings: fp32 4 B/value, fp16 2 B, nat 36 B
per 32 values (1.125 B), dithering 4(1+L) B per 32 values (L = ceil(log2(levels+1)) bits of
level index plus a sign bit) and one float32 norm per bucket of 512 values (nat s=8: 5.06
bits/value; s=3: 3.06), top-k ratio r: K = r*values uint32 indices and K values (nat: 1.125
B each; exact: 4 B), PowerSGD rank r: for each matrix it compresses P (rows x r) and Q
(columns x r) in fp32, every other tensor in fp32, each by the ring factor, and its first
two steps plain fp32 (start_powerSGD_iter=2). Headers, padding to 32 values and
per-bucket rounding of k are left out (well under 1% here).
"""

import argparse
import math
import json
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ORDER = ["fp32", "fp16", "powersgd", "powersgd4", "nat", "nat+ef", "dither_nat", "dither_nat:s=3",
         "topk1%+ef", "control:topk1%", "control:terngrad"]
DITHER_BUCKET = 512  # kDefaultDitherBucketValues (docs/wire-format.md)
ZOOM_NATS = 0.1


# ------------------------------------------------------------------ bytes model


def parse_spec(spec):
    """[(name, {key: value})] of a codec spec (docs/wire-format.md's grammar)."""
    components = []
    for component in spec.split("+"):
        name, _, rest = component.partition(":")
        keys = dict(item.split("=", 1) for item in rest.split(",") if item)
        components.append((name, keys))
    return components


def quantizer_bytes_per_value(name, keys):
    """Encoded bytes per value of a bucket-scope quantizer."""
    if name == "none":
        return 4.0
    if name in ("nat", "nat_det"):
        return 36 / 32
    if name in ("dither_nat", "dither_std", "qsgd", "terngrad"):
        if name == "dither_nat":
            levels = int(keys.get("s", 8))
        elif name == "dither_std":
            levels = int(keys["u"]) if "u" in keys else 2 ** (int(keys.get("s", 3)) - 1)
        elif name == "qsgd":
            levels = int(keys.get("s", 16))
        else:
            levels = 1
        index_bits = max(1, math.ceil(math.log2(levels + 1)))
        bucket = int(keys.get("bucket", DITHER_BUCKET))
        norm = 1 if keys.get("norm") == "nat" else 4
        return 4 * (1 + index_bits) / 32 + norm / bucket
    raise ValueError(f"no wire model for quantizer {name}")


def powersgd_values(shapes, rank):
    """float32 values PowerSGD rank `rank` allreduces per step (torch 1.13's rule: a matrix
    is compressed when (rows + columns) * rank * 2 < rows * columns)."""
    total = 0
    for shape in shapes:
        if len(shape) < 2:
            total += math.prod(shape)
            continue
        rows, columns = shape[0], math.prod(shape[1:])
        r = min(rank, rows, columns)
        total += (rows + columns) * r if (rows + columns) * r * 2 < rows * columns else rows * columns
    return total


def parameter_shapes(args):
    sys.path.insert(0, str(ROOT / "examples"))
    import torch
    from ddp_train import ByteTransformer

    torch.manual_seed(0)
    model = ByteTransformer(args["width"], args["layers"], context=args["context"])
    return [tuple(p.shape) for p in model.parameters()]


def wire_model(record):
    """(bytes one rank sends per step after the first steps, bytes in the first steps,
    how many first steps, description) for the run `record`."""
    args, n, values = record["args"], record["world_size"], record["parameters"]
    ring = 2 * (n - 1) / n
    if args["hook"] == "default":
        return ring * 4 * values, 0, 0, "4 B/value x 2(n-1)/n"
    if args["hook"] == "fp16":
        return ring * 2 * values, 0, 0, "2 B/value x 2(n-1)/n"
    if args["hook"] == "powersgd":
        rank = args["powersgd_rank"]
        sent = powersgd_values(parameter_shapes(args), rank)
        return (ring * 4 * sent, ring * 4 * values, 2,
                f"rank {rank}: {sent} fp32 values (P, Q, uncompressed tensors) x 2(n-1)/n")
    components = parse_spec(args["codec"])
    name, keys = components[0]
    if name == "topk":
        ratio = float(keys.get("ratio", 0.01))
        kept = values * ratio if "k" not in keys else float(keys["k"])
        value_bytes = 36 / 32 if len(components) > 1 and components[1][0] == "nat" else 4.0
        return ((n - 1) * kept * (4 + value_bytes), 0, 0,
                f"allgather: (n-1) x {ratio:g} x (4 B index + {value_bytes:g} B value)")
    if name == "randk":
        raise ValueError("no wire model for randk")
    per_value = quantizer_bytes_per_value(name, keys)
    return ring * per_value * values, 0, 0, f"{per_value:.4g} B/value x 2(n-1)/n"


def bytes_sent(record, step):
    """Cumulative bytes one rank has sent after `step` steps (the model above)."""
    steady, first, first_steps, _ = wire_model(record)
    early = min(step, first_steps)
    return early * first + (step - early) * steady


# ----------------------------------------------------------------------- data


def load(data):
    runs = defaultdict(list)
    for path in sorted(Path(data).glob("*-seed*.json")):
        record = json.loads(path.read_text())
        runs[record["config"]].append(record)
    if not runs:
        raise SystemExit(f"plot.py: no runs in {data} (run perf/convergence/run_study.py first)")
    for records in runs.values():
        records.sort(key=lambda record: record["args"]["seed"])
    return runs


def ordered(runs):
    return [name for name in ORDER if name in runs] + sorted(name for name in runs if name not in ORDER)


def curves(records):
    length = min(len(record["history"]) for record in records)
    steps = [entry["step"] for entry in records[0]["history"][:length]]
    losses = [[entry["validation_loss"] for entry in record["history"][:length]] for record in records]
    means = [statistics.fmean(column) for column in zip(*losses)]
    stds = [statistics.stdev(column) if len(column) > 1 else 0.0 for column in zip(*losses)]
    return steps, means, stds


def final_losses(records):
    return {record["args"]["seed"]: record["history"][-1]["validation_loss"] for record in records}


def comparison(records, reference):
    """(mean paired difference, two standard errors of it, verdict, paired differences by
    seed) over the seeds both have: a seed fixes initialisation, batches and the codec's key
    for every scheme alike, so seed-to-seed variation cancels in the pairs."""
    finals, base = final_losses(records), final_losses(reference)
    paired = {seed: finals[seed] - base[seed] for seed in sorted(finals) if seed in base}
    values = list(paired.values())
    if not values:
        return float("nan"), float("nan"), "-", paired
    difference = statistics.fmean(values)
    if len(values) < 2:
        return difference, float("nan"), "-", paired
    noise = 2 * statistics.stdev(values) / math.sqrt(len(values))
    if abs(difference) <= noise:
        verdict = "no"
    else:
        verdict = "yes, worse" if difference > 0 else "yes, better"
    return difference, noise, verdict, paired


def table(runs):
    names = ordered(runs)
    reference = runs.get("fp32")
    fp32_step = wire_model(reference[0])[0] if reference else None
    lines = ["| scheme | seeds | steps | final validation loss (nats/byte), mean ± std | vs fp32 | "
             "2 s.e. | beyond seed noise? | vs fp32 by seed | MB sent per rank and step (model) | "
             "fewer bytes than fp32 |",
             "| --- | ---: | ---: | --- | ---: | ---: | --- | --- | ---: | ---: |"]
    for name in names:
        records = runs[name]
        values = list(final_losses(records).values())
        mean = statistics.fmean(values)
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        steady = wire_model(records[0])[0]
        steps = records[0]["history"][-1]["step"]
        if reference and name != "fp32":
            difference, noise, verdict, paired = comparison(records, reference)
            by_seed = ", ".join(f"{value:+.3f}" for value in paired.values())
            versus, noise_text = f"{difference:+.4f}", f"{noise:.4f}"
        else:
            versus = noise_text = verdict = by_seed = "-"
        fewer = f"{fp32_step / steady:.1f}×" if fp32_step else "-"
        lines.append(f"| {name} | {len(values)} | {steps} | {mean:.4f} ± {std:.4f} | {versus} | {noise_text} | "
                     f"{verdict} | {by_seed} | {steady / 1e6:.3f} | {fewer} |")
    return "\n".join(lines)


def wire_table(runs):
    lines = ["| scheme | wire model per rank and step |", "| --- | --- |"]
    for name in ordered(runs):
        lines.append(f"| {name} | {wire_model(runs[name][0])[3]} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------- plots


def style_of(name):
    if name.startswith("control"):
        return {"linestyle": "--", "linewidth": 1.6}
    if name in ("fp32",):
        return {"color": "black", "linewidth": 2.2}
    return {"linewidth": 1.4}


def plot(runs, plots):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ordered(runs)
    first = runs[names[0]][0]
    args = first["args"]
    seeds = min(len(records) for records in runs.values())
    setup = (f"{first['parameters'] / 1e6:.2f} M-parameter byte transformer, {first['world_size']} ranks x "
             f"{args['batch']} x {args['context']} bytes per step, AdamW {args['lr']:g} "
             f"({args.get('lr_schedule', 'constant')}); mean of {seeds} seeds, band ±1 std")
    colors = {name: f"C{index % 10}" for index, name in enumerate(n for n in names if n != "fp32")}
    colors["fp32"] = "black"
    Path(plots).mkdir(parents=True, exist_ok=True)

    def draw(axis, name, x, means, stds):
        style = dict(style_of(name), color=colors[name])
        axis.plot(x, means, label=name, **style)
        axis.fill_between(x, [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)],
                          color=colors[name], alpha=0.12, linewidth=0)

    # Against steps: the whole run, and its second half enlarged.
    figure, (whole, zoom) = plt.subplots(1, 2, figsize=(13, 5.2))
    last = max(records[0]["history"][-1]["step"] for records in runs.values())
    reference = statistics.fmean(final_losses(runs["fp32"]).values()) if "fp32" in runs else None
    zoom_low, zoom_high = math.inf, -math.inf
    for name in names:
        steps, means, stds = curves(runs[name])
        draw(whole, name, steps, means, stds)
        half = [i for i, step in enumerate(steps) if step >= last / 2]
        draw(zoom, name, [steps[i] for i in half], [means[i] for i in half], [stds[i] for i in half])
        # The enlargement frames the schemes that end within ZOOM_NATS of fp32 (the others
        # leave the frame: the left panel has them).
        if reference is None or means[-1] <= reference + ZOOM_NATS:
            zoom_low = min(zoom_low, min(means[i] - stds[i] for i in half))
            zoom_high = max(zoom_high, max(means[i] + stds[i] for i in half))
    for axis in (whole, zoom):
        axis.set_xlabel("training step")
        axis.set_ylabel("validation loss (nats/byte)")
        axis.grid(alpha=0.3)
    whole.set_title("validation loss against steps", fontsize=10)
    zoom.set_title(f"second half, enlarged (schemes within {ZOOM_NATS:g} nats/byte of fp32 at the end)",
                   fontsize=10)
    zoom.set_ylim(zoom_low - 0.01, zoom_high + 0.01)
    whole.legend(fontsize=8)
    figure.suptitle(setup, fontsize=9)
    figure.tight_layout()
    path = Path(plots) / "convergence-loss-vs-steps.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    print(f"plot.py: wrote {path}")

    figure, axis = plt.subplots(figsize=(8.5, 5.2))
    for name in names:
        steps, means, stds = curves(runs[name])
        draw(axis, name, [bytes_sent(runs[name][0], step) / 1e6 for step in steps], means, stds)
    axis.set_xscale("log")
    axis.set_xlabel("MB sent per rank (a model of each scheme's wire cost, not measured)")
    axis.set_ylabel("validation loss (nats/byte)")
    axis.set_title(setup, fontsize=8)
    axis.grid(alpha=0.3, which="both")
    axis.legend(fontsize=8)
    figure.tight_layout()
    path = Path(plots) / "convergence-loss-vs-bytes.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    print(f"plot.py: wrote {path}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(ROOT / "docs" / "data" / "convergence"))
    parser.add_argument("--plots", default=str(ROOT / "docs" / "plots"))
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args(argv)
    runs = load(args.data)
    print(table(runs))
    print()
    print(wire_table(runs))
    if not args.no_plots:
        plot(runs, args.plots)


if __name__ == "__main__":
    main()
