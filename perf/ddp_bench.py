#!/usr/bin/env python3
"""Time one DDP training step under each gradient reduction, side by side in one run.

    perf/ddp_bench.py --cluster 4 --link 1gbit --json out.json --plot out.png   # emulated hosts (root)
    perf/ddp_bench.py --ranks 4                                                # processes on loopback
    perf/ddp_bench.py --cluster 4 --switch --schemes default,powersgd,nat-ring,nat-switch   # with cc_switchd

Every rank builds one model per scheme (the same weights), wraps each in DDP with its
hook, warms them up (DDP's bucket rebuild, PowerSGD's start, auto's trials), then times
rounds of steps, each round visiting the schemes in a rotated order so that machine noise
falls on all of them alike. A step's time is the slowest rank's; a scheme's figure is the
median over its timed steps, and its speedups are medians of ratios taken round by round.

Schemes: default (DDP's fp32 allreduce), fp16 (fp16_compress_hook), powersgd (rank 1,
one bucket: PowerSGD fails on gloo with several), compressedcoll's hook as
<codec>-<algo>[-ef], e.g. nat-ring, nat-auto, nat-auto-ef, and local (a hook that
communicates nothing: each rank keeps its own gradients; not training, but the floor that
forward, backward and the optimizer set on these hosts). With --switch (emulated
hosts only) a cc_switchd aggregates on the emulated switch, every link runs jumbo
frames (for every scheme alike), algo `switch` is a scheme (nat-switch) and auto may
choose it.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SCHEMES = "default,fp16,powersgd,nat-ring,nat-direct,nat-tree,nat-auto,nat-auto-ef"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--ranks", type=int, help="run N ranks as local processes on loopback")
    where.add_argument("--cluster", type=int, help="run N emulated hosts (perf/cluster.sh, needs root)")
    parser.add_argument("--link", default="1gbit", help="--cluster: every port's rate")
    parser.add_argument("--delay", default=None, help="--cluster: one-way delay (perf/cluster.sh --delay)")
    parser.add_argument("--schemes", default=DEFAULT_SCHEMES)
    parser.add_argument("--switch", action="store_true",
                        help="--cluster: run cc_switchd on the emulated switch (MTU 9000 on every link)")
    parser.add_argument("--switchd", default=str(ROOT / "build" / "switch" / "cc_switchd"),
                        help="the cc_switchd binary for --switch")
    parser.add_argument("--width", type=int, default=2048, help="width of the model's square layers")
    parser.add_argument("--layers", type=int, default=4, help="layers: width=2048, 4 layers = 16.8 M parameters")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--bucket-cap-mb", type=float, default=25.0, help="DDP's bucket size (PowerSGD: one bucket)")
    parser.add_argument("--grad-as-bucket-view", action="store_true",
                        help="DDP's gradient_as_bucket_view for every scheme (no copies into and out of buckets)")
    parser.add_argument("--warmup", type=int, default=4, help="untimed steps per scheme")
    parser.add_argument("--auto-warmup", type=int, default=40,
                        help="untimed steps of schemes with algo auto (its trials settle each bucket size)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per scheme and round")
    parser.add_argument("--min-compress-bytes", type=int, default=64 * 1024)
    parser.add_argument("--json", default=None, help="rank 0 writes the results here")
    parser.add_argument("--plot", default=None, help="rank 0 draws step times and speedups here (PNG)")
    parser.add_argument("--timeline", default=None, metavar="DIR",
                        help="every rank writes its timed steps' events here (phases; for compressedcoll's hook "
                             "each bucket's submission and call), and rank 0 prints where the steps went")
    parser.add_argument("--replot", default=None, metavar="JSON", help="only draw --plot from an earlier --json")
    parser.add_argument("--python-path", default=str(ROOT / "build" / "python"),
                        help="where compressedcoll is, when it is not installed")
    return parser.parse_args(argv)


# ---------------------------------------------------------------- launching


def forwarded_args(argv):
    """argv without the launch options (--ranks/--cluster/--link/--delay and their values)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in ("--ranks", "--cluster", "--link", "--delay"):
            skip = "=" not in arg
            continue
        out.append(arg)
    return out


def launch(args, argv):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [args.python_path,
                                                                    os.environ.get("PYTHONPATH")])))
    command = [sys.executable, str(Path(__file__).resolve())] + forwarded_args(argv)
    if args.cluster:
        cluster = [str(ROOT / "perf" / "cluster.sh"), "--hosts", str(args.cluster), "--link", args.link]
        if args.delay:
            cluster += ["--delay", args.delay]
        if args.switch:
            if not os.access(args.switchd, os.X_OK):
                raise SystemExit(f"ddp_bench: --switch: no cc_switchd at {args.switchd} (build it, or --switchd PATH)")
            cluster += ["--mtu", "9000", "--switchd", args.switchd]
        os.execvpe(cluster[0], cluster + ["--"] + command, env)
    if args.switch:
        raise SystemExit("ddp_bench: --switch runs the daemon on the emulated switch: use it with --cluster")
    port = _free_port()
    processes = []
    for rank in range(args.ranks):
        rank_env = dict(env, CC_RANK=str(rank), CC_NRANKS=str(args.ranks), CC_COMM_ID=f"127.0.0.1:{port}",
                        CC_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1")
        processes.append(subprocess.Popen(command, env=rank_env,
                                          stdout=None if rank == 0 else subprocess.DEVNULL))
    return max(process.wait() for process in processes)


def _free_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------- rank


def make_model(torch, args):
    torch.manual_seed(0)
    layers = []
    for _ in range(args.layers):
        layers += [torch.nn.Linear(args.width, args.width), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers[:-1])


class Scheme:
    def __init__(self, name, torch, dist, args):
        from torch.nn.parallel import DistributedDataParallel as DDP

        self.name = name
        self.model = make_model(torch, args)
        self.state = None
        # --timeline: (event, CLOCK_MONOTONIC ns, bucket index or -1); one clock for every
        # emulated host, which are namespaces of this machine.
        self.events = []
        parts = name.split("-")
        if name == "powersgd":
            # One bucket: PowerSGD's callbacks issue collectives from gloo's threads, and with
            # two buckets in flight the ranks' orders differ (hang or abort). After its first
            # iteration DDP splits off a first bucket of _DEFAULT_FIRST_BUCKET_BYTES (1 MiB),
            # whatever bucket_cap_mb says.
            first_bucket = dist._DEFAULT_FIRST_BUCKET_BYTES
            dist._DEFAULT_FIRST_BUCKET_BYTES = 1 << 40
            try:
                self.ddp = DDP(self.model, bucket_cap_mb=1 << 20, gradient_as_bucket_view=args.grad_as_bucket_view)
            finally:
                dist._DEFAULT_FIRST_BUCKET_BYTES = first_bucket
        else:
            self.ddp = DDP(self.model, bucket_cap_mb=args.bucket_cap_mb,
                           gradient_as_bucket_view=args.grad_as_bucket_view)
        if name == "fp16":
            from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

            self.ddp.register_comm_hook(None, default_hooks.fp16_compress_hook)
        elif name == "powersgd":
            from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook

            self.state = powerSGD_hook.PowerSGDState(process_group=None, matrix_approximation_rank=1,
                                                     start_powerSGD_iter=2, use_error_feedback=True,
                                                     warm_start=True, random_seed=0)
            self.ddp.register_comm_hook(self.state, powerSGD_hook.powerSGD_hook)
        elif name == "local":
            def local_hook(_, bucket):
                future = torch.futures.Future()
                future.set_result(bucket.buffer())
                return future

            self.ddp.register_comm_hook(None, local_hook)
        elif name != "default":
            import compressedcoll.torch as cct

            if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "ef"):
                raise SystemExit(f"ddp_bench: scheme '{name}' is not <codec>-<algo>[-ef]")
            self.state = cct.CompressionState(codec=parts[0], algo=parts[1], error_feedback=len(parts) == 3,
                                              min_compress_bytes=args.min_compress_bytes)
            self.ddp.register_comm_hook(self.state, self.timed_hook(cct.compressed_allreduce_hook))
        self.optimizer = torch.optim.SGD(self.ddp.parameters(), lr=1e-6)
        self.warmup = args.auto_warmup if name.split("-")[1:2] == ["auto"] else args.warmup
        self.times = []  # per round: the slowest rank's step times
        self.phases = []  # per timed step: this rank's (forward, backward, optimizer) seconds

    def timed_hook(self, hook):
        """`hook`, logging each bucket's submission and each of the state's calls (on its worker
        thread) for --timeline."""
        events = self.events
        allreduce = self.state.comm.allreduce

        def timed_allreduce(*args, **kwargs):
            events.append(("call_start", time.monotonic_ns(), -1))
            try:
                return allreduce(*args, **kwargs)
            finally:
                events.append(("call_end", time.monotonic_ns(), -1))

        self.state.comm.allreduce = timed_allreduce

        def submitting(state, bucket):
            events.append(("submit", time.monotonic_ns(), bucket.index()))
            return hook(state, bucket)

        return submitting

    def step(self, torch, inputs):
        """One training step; returns the seconds of (forward, backward, optimizer step).
        Backward ends when DDP has every bucket's result: it includes the communication
        that backward's computation did not hide."""
        self.events.append(("step", time.monotonic_ns(), -1))
        start = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.ddp(inputs).square().mean()
        forward = time.perf_counter()
        loss.backward()
        backward = time.perf_counter()
        self.events.append(("backward_end", time.monotonic_ns(), -1))
        self.optimizer.step()
        self.events.append(("optimizer_end", time.monotonic_ns(), -1))
        return forward - start, backward - forward, time.perf_counter() - backward


def run_rank(args):
    import torch
    import torch.distributed as dist

    rank, world = int(os.environ["CC_RANK"]), int(os.environ["CC_NRANKS"])
    comm_id = os.environ.pop("CC_COMM_ID")  # each hook state makes its own id (a random port)
    host, port = comm_id.rsplit(":", 1)
    if os.environ.get("CC_SOCKET_IFNAME"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", os.environ["CC_SOCKET_IFNAME"])
    if os.environ.get("CC_CLUSTER_SWITCH_ADDR"):
        os.environ.setdefault("CC_SWITCH_ADDR", os.environ["CC_CLUSTER_SWITCH_ADDR"])
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://{host}:{int(port) + 1}", rank=rank, world_size=world)
    names = [name for name in args.schemes.split(",") if name]
    schemes = [Scheme(name, torch, dist, args) for name in names]
    parameters = sum(p.numel() for p in schemes[0].model.parameters())
    inputs = torch.randn(args.batch, args.width, generator=torch.Generator().manual_seed(rank))
    if rank == 0:
        print(f"# ddp_bench: {world} ranks, {os.environ.get('CC_CLUSTER_LINK', 'loopback')}, "
              f"{parameters / 1e6:.1f} M parameters ({parameters * 4 / 2**20:.0f} MiB of float32 gradients), "
              f"batch {args.batch}, buckets of {args.bucket_cap_mb:g} MB"
              f"{', cc_switchd at ' + os.environ['CC_SWITCH_ADDR'] + ', MTU 9000' if args.switch else ''}"
              f"{', gradient_as_bucket_view' if args.grad_as_bucket_view else ''}; {args.rounds} rounds x {args.steps} "
              f"steps per scheme", flush=True)
    for scheme in schemes:
        for _ in range(scheme.warmup):
            scheme.step(torch, inputs)
        scheme.events.clear()
    slowest = torch.zeros(1, dtype=torch.float64)
    for round_number in range(args.rounds):
        order = names[round_number % len(names):] + names[:round_number % len(names)]
        for name in order:
            scheme = schemes[names.index(name)]
            times = []
            for _ in range(args.steps):
                dist.barrier()
                start = time.perf_counter()
                scheme.phases.append(scheme.step(torch, inputs))
                slowest[0] = time.perf_counter() - start
                dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
                times.append(float(slowest[0]))
            scheme.times.append(times)
    if rank == 0:
        report(args, schemes, world, parameters)
    if args.timeline:
        directory = Path(args.timeline)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"rank{rank}.json").write_text(json.dumps({s.name: s.events for s in schemes}))
        dist.barrier()
        if rank == 0:
            timeline_report(directory, names, world)
    for scheme in schemes:
        if hasattr(scheme.state, "close"):
            scheme.state.close()
    dist.destroy_process_group()


# ------------------------------------------------------------------- report


def split_steps(events):
    """A rank's events, one dict per step: its start, the bucket submissions, the calls'
    starts and ends, and the ends of backward and of the optimizer (ns)."""
    steps = []
    for event, ns, _ in events:
        if event == "step":
            steps.append({"step": ns, "submit": [], "call_start": [], "call_end": []})
        elif steps and isinstance(steps[-1].get(event), list):
            steps[-1][event].append(ns)
        elif steps:
            steps[-1][event] = ns
    return steps


def timeline_report(directory, names, world):
    """Where each scheme's timed steps went, all ranks on one clock: medians over the steps, in
    ms from the step's start (the first rank's; a barrier precedes every timed step)."""
    ranks = [json.loads((directory / f"rank{r}.json").read_text()) for r in range(world)]
    print(f"# timeline (raw: {directory}/rank*.json): medians over the timed steps, ms from the step's start; "
          "a call runs from its last rank's start to its last rank's end")
    for name in names:
        per_rank = [split_steps(rank[name]) for rank in ranks]
        count = min(len(steps) for steps in per_rank)
        if count == 0:
            continue
        figures = {}

        def add(key, value):
            figures.setdefault(key, []).append(value)

        calls = min(len(steps[i]["call_start"]) for steps in per_rank for i in range(count))
        for i in range(count):
            step = [steps[i] for steps in per_rank]
            start = min(s["step"] for s in step)
            if step[0]["submit"]:
                add("first submission, first rank", min(s["submit"][0] for s in step) - start)
                add("first submission, last rank", max(s["submit"][0] for s in step) - start)
            for k in range(calls):
                last_start = max(s["call_start"][k] for s in step) - start
                add(f"call {k} start", last_start)
                add(f"call {k} length", max(s["call_end"][k] for s in step) - start - last_start)
            add("backward end", max(s["backward_end"] for s in step) - start)
            add("step end", max(s["optimizer_end"] for s in step) - start)
        text = ", ".join(f"{key} {statistics.median(values) / 1e6:.0f}" for key, values in figures.items())
        print(f"# {name}: {text}", flush=True)


def quartiles(values):
    values = sorted(values)
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4)
    return q[0], q[2]


def paired_speedup(baseline, scheme):
    """Median over rounds of (baseline's median step / scheme's median step) in that round."""
    ratios = [statistics.median(b) / statistics.median(s) for b, s in zip(baseline.times, scheme.times)]
    return statistics.median(ratios), ratios


def report(args, schemes, world, parameters):
    by_name = {scheme.name: scheme for scheme in schemes}
    baselines = [name for name in ("default", "powersgd") if name in by_name]
    rows = []
    width = max(18, max(len(scheme.name) for scheme in schemes))
    header = f"{'scheme':<{width}} {'s/step':>8} {'q1':>8} {'q3':>8}" + "".join(
        f" {'vs ' + name:>12}" for name in baselines) + "   rank 0: forward / backward / optimizer (ms)"
    print(header)
    for scheme in schemes:
        flat = [t for times in scheme.times for t in times]
        median = statistics.median(flat)
        q1, q3 = quartiles(flat)
        phases = [statistics.median(phase) for phase in zip(*scheme.phases)]
        row = {"scheme": scheme.name, "median_s": median, "q1_s": q1, "q3_s": q3, "times_s": scheme.times,
               "rank0_forward_backward_optimizer_s": phases}
        line = f"{scheme.name:<{width}} {median:8.4f} {q1:8.4f} {q3:8.4f}"
        for name in baselines:
            speedup, ratios = paired_speedup(by_name[name], scheme)
            row[f"speedup_vs_{name}"] = speedup
            row[f"speedup_vs_{name}_rounds"] = ratios
            line += f" {speedup:11.2f}x"
        line += "   " + " / ".join(f"{1000 * phase:.0f}" for phase in phases)
        rows.append(row)
        print(line, flush=True)
    fixed = [name for name in by_name if name.endswith(("-ring", "-direct", "-tree", "-switch"))]
    for scheme in schemes:
        parts = scheme.name.split("-")
        if len(parts) == 2 and parts[1] == "auto":
            candidates = [name for name in fixed if name.startswith(parts[0] + "-")]
            if candidates:
                best = min(candidates, key=lambda name: next(r["median_s"] for r in rows if r["scheme"] == name))
                ratio, _ = paired_speedup(by_name[best], scheme)
                print(f"# {scheme.name}: {1 / ratio:.3f} of the best fixed algorithm's step time ({best}), "
                      "round by round", flush=True)
    result = {"world_size": world, "link": os.environ.get("CC_CLUSTER_LINK", "loopback"), "parameters": parameters,
              "args": {k: v for k, v in vars(args).items() if k != "python_path"}, "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    if args.plot:
        plot(result, args.plot)


def plot(result, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("# ddp_bench: no matplotlib (Debian: python3-matplotlib); no plot", flush=True)
        return
    rows = result["rows"]
    names = [row["scheme"] for row in rows]
    medians = [row["median_s"] for row in rows]
    errors = [[row["median_s"] - row["q1_s"] for row in rows], [row["q3_s"] - row["median_s"] for row in rows]]
    colors = ["#cccccc" if name == "local" else "#888888" if "-" not in name else "#1f77b4" for name in names]
    figure, axis = plt.subplots(figsize=(8, 4))
    axis.bar(names, medians, yerr=errors, color=colors, capsize=3)
    for index, row in enumerate(rows):
        if row["scheme"] == "local":  # a floor, not a reduction
            axis.text(index, row["median_s"], "no comm.", ha="center", va="bottom", fontsize=8)
        elif "speedup_vs_default" in row:
            axis.text(index, row["median_s"], f"{row['speedup_vs_default']:.2f}x", ha="center", va="bottom",
                      fontsize=8)
    axis.set_ylabel("s per DDP step (median, quartiles)")
    axis.set_title(f"DDP step, {result['parameters'] / 1e6:.1f} M parameters, {result['world_size']} hosts x "
                   f"{result['link']} (labels: speedup over the default hook)", fontsize=9)
    plt.setp(axis.get_xticklabels(), rotation=30, ha="right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.replot:
        plot(json.loads(Path(args.replot).read_text()), args.plot or "ddp-bench.png")
        return 0
    if "CC_RANK" in os.environ:
        run_rank(args)
        return 0
    if not (args.ranks or args.cluster):
        raise SystemExit("ddp_bench: --ranks N (loopback) or --cluster N --link RATE (emulated hosts)")
    return launch(args, argv)


if __name__ == "__main__":
    sys.exit(main())
