#!/usr/bin/env python3
"""The convergence study of issue 20: the example's byte-level transformer trained under
DDP with each gradient reduction, several seeds, one command.

    build/venv/bin/python perf/convergence/run_study.py     # about 70 minutes on 2 cores
    build/venv/bin/python perf/convergence/plot.py          # plots and the table

Every run is `examples/ddp_train.py` with --ranks processes on this machine (launched
here, gloo over loopback, OMP_NUM_THREADS=1, under `nice`); its validation-loss history
lands in --out as <config>-seed<s>.json. A run whose file exists is skipped, so an
interrupted study resumes where it stopped (a run cut short leaves no file). Seed s fixes
the model's initialisation, every rank's batches and the codec's random key, the same for
every config: runs of one seed are paired. Before each run the launcher waits while
/tmp/cc-bench.lock exists (timing benchmarks hold it).

Larger: --scale N multiplies the steps (and the steps between evaluations, so the curves
keep their points); --width/--layers/--batch/--context size the model and the batch;
--seeds and --ranks as named. See perf/convergence/README.md.
"""

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "ddp_train.py"
LOCK = Path("/tmp/cc-bench.lock")  # held while timing benchmarks run on this machine
EXIT_GRACE = 120.0  # seconds the ranks get to exit once rank 0 has written its results

# name -> the example's options. Quantizers run on the ring (what `auto` picked in
# docs/results.md's DDP benchmark; pinned so that every seed runs the same algorithm: the
# ring encodes each value n times, direct twice, tree up to log2(n)+1 times). Top-k can only
# run on allgather. The control is a compressor known to hurt: top-k 1% without error
# feedback drops 99% of each gradient for good.
CONFIGS = {
    "fp32": ["--hook", "default"],
    "fp16": ["--hook", "fp16"],
    "powersgd": ["--hook", "powersgd", "--powersgd-rank", "1"],
    "nat": ["--codec", "nat", "--algo", "ring"],
    "nat+ef": ["--codec", "nat", "--algo", "ring", "--ef"],
    "dither_nat": ["--codec", "dither_nat", "--algo", "ring"],
    "dither_nat:s=3": ["--codec", "dither_nat:s=3", "--algo", "ring"],
    "topk1%+ef": ["--codec", "topk:ratio=0.01+nat", "--algo", "allgather", "--ef"],
    "control:topk1%": ["--codec", "topk:ratio=0.01+nat", "--algo", "allgather"],
    # Not in the default list (--configs to add them):
    "control:terngrad": ["--codec", "terngrad", "--algo", "ring"],
    "powersgd4": ["--hook", "powersgd", "--powersgd-rank", "4"],
}
DEFAULT_CONFIGS = ["fp32", "fp16", "powersgd", "nat", "nat+ef", "dither_nat", "dither_nat:s=3",
                   "topk1%+ef", "control:topk1%"]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "docs" / "data" / "convergence"),
                        help="one JSON per run lands here")
    parser.add_argument("--configs", default=",".join(DEFAULT_CONFIGS), help="any of: " + ", ".join(CONFIGS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--ranks", type=int, default=4)
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiplies --steps, --warmup-steps and --log-every")
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8, help="sequences per rank and step")
    parser.add_argument("--context", type=int, default=64, help="bytes per sequence")
    parser.add_argument("--lr", type=float, default=3e-3, help="AdamW's peak learning rate")
    parser.add_argument("--warmup-steps", type=int, default=20)
    parser.add_argument("--lr-schedule", default="cosine", choices=["cosine", "constant"])
    parser.add_argument("--min-lr-ratio", type=float, default=0.1)
    parser.add_argument("--log-every", type=int, default=25, help="steps between validation losses")
    parser.add_argument("--eval-batches", type=int, default=32,
                        help="validation batches (of --batch windows), shared by the ranks")
    parser.add_argument("--nice", type=int, default=5, help="niceness of the training processes")
    parser.add_argument("--run-timeout", type=float, default=1800.0,
                        help="seconds before a run is ended (times --scale)")
    parser.add_argument("--python-path", default=str(ROOT / "build" / "python"),
                        help="where compressedcoll is, when it is not installed")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    return parser.parse_args(argv)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_quiet_machine():
    announced = False
    while LOCK.exists():
        if not announced:
            print(f"run_study: waiting while {LOCK} exists (a benchmark is timing)", flush=True)
            announced = True
        time.sleep(30)


def example_options(name, seed, args, json_path):
    steps = max(1, round(args.steps * args.scale))
    return ["--steps", str(steps), "--seed", str(seed), "--comm-seed", str(1000 + seed),
            "--width", str(args.width), "--layers", str(args.layers), "--batch", str(args.batch),
            "--context", str(args.context), "--lr", str(args.lr), "--lr-schedule", args.lr_schedule,
            "--warmup-steps", str(round(args.warmup_steps * args.scale)), "--min-lr-ratio", str(args.min_lr_ratio),
            "--log-every", str(max(1, round(args.log_every * args.scale))),
            "--eval-batches", str(args.eval_batches), "--shard-eval", "--json", str(json_path)] + CONFIGS[name]


def launch(options, args, log_dir, result):
    """Runs the example on args.ranks local processes; returns (exit status, log paths,
    ranks ended here after their results were in). A rank that fails, or a run past
    --run-timeout, ends the others. Once rank 0 has written `result` (training and its
    evaluations are over), ranks still alive EXIT_GRACE seconds later are ended and the run
    counts: torch 1.13's gloo can deadlock tearing down a process group at exit."""
    port = free_port()
    base = dict(os.environ, CC_SOCKET_IFNAME=os.environ.get("CC_SOCKET_IFNAME", "lo"), OMP_NUM_THREADS="1",
                MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(args.ranks),
                PYTHONPATH=os.pathsep.join(filter(None, [args.python_path, os.environ.get("PYTHONPATH")])))
    base.pop("CC_COMM_ID", None)  # the hook would use that address instead of its own id
    processes, logs = [], []
    for rank in range(args.ranks):
        log = log_dir / f"rank{rank}.log"
        logs.append(log)
        env = dict(base, RANK=str(rank), LOCAL_RANK=str(rank))
        with open(log, "w") as out:
            processes.append(subprocess.Popen(["nice", "-n", str(args.nice), sys.executable, "-u", str(EXAMPLE)]
                                              + options, env=env, stdout=out, stderr=subprocess.STDOUT,
                                              start_new_session=True))
    deadline = time.time() + args.run_timeout * max(1.0, args.scale)
    status, result_seen, stragglers = 0, None, 0
    try:
        while any(process.poll() is None for process in processes):
            failed = [process.returncode for process in processes if process.returncode not in (None, 0)]
            if failed or time.time() > deadline:
                status = failed[0] if failed else 124
                break
            if result_seen is None and result.exists():
                result_seen = time.time()
            if result_seen is not None and time.time() - result_seen > EXIT_GRACE:
                stragglers = sum(process.poll() is None for process in processes)
                break
            time.sleep(1)
        else:
            status = next((process.returncode for process in processes if process.returncode), 0)
    finally:
        for process in processes:  # only the processes started here, by their own group
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    return status, logs, stragglers


def run(name, seed, args, out):
    target = out / f"{name}-seed{seed}.json"
    if target.exists():
        return True, "skipped (done)"
    partial = out / f".{name}-seed{seed}.json.partial"
    options = example_options(name, seed, args, partial)
    if args.dry_run:
        return True, "would run: examples/ddp_train.py " + " ".join(options)
    wait_for_quiet_machine()
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="convergence-") as log_dir:
        status, logs, stragglers = launch(options, args, Path(log_dir), partial)
        if status != 0 or not partial.exists():
            failure = out / f"{name}-seed{seed}.failed.log"
            failure.write_text("".join(f"===== {log.name}\n{log.read_text(errors='replace')}" for log in logs))
            partial.unlink(missing_ok=True)
            return False, f"FAILED (exit {status}); output in {failure}"
    record = json.loads(partial.read_text())
    record.update({"config": name, "config_options": CONFIGS[name], "wall_seconds": time.time() - started,
                   "launcher": {"ranks": args.ranks, "nice": args.nice, "cpus": os.cpu_count(),
                                "python": platform.python_version(), "torch": torch_version(),
                                "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                "ranks_ended_after_results": stragglers}})
    target.write_text(json.dumps(record, indent=1))
    partial.unlink()
    (out / f"{name}-seed{seed}.failed.log").unlink(missing_ok=True)
    final = record["history"][-1]
    return True, (f"validation {final['validation_loss']:.4f} nats/byte after {final['step']} steps "
                  f"in {record['wall_seconds']:.0f} s")


def torch_version():
    try:
        import torch

        return torch.__version__
    except ImportError:
        return None


def main(argv=None):
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = [name for name in args.configs.split(",") if name]
    unknown = [name for name in names if name not in CONFIGS]
    if unknown:
        raise SystemExit(f"run_study: unknown configs {unknown}; known: {', '.join(CONFIGS)}")
    seeds = [int(seed) for seed in args.seeds.split(",") if seed]
    started = time.time()
    failures = []
    # Seeds outermost: a study cut short still has every config for its first seeds.
    for seed in seeds:
        for name in names:
            ok, message = run(name, seed, args, out)
            print(f"run_study: {name} seed {seed}: {message}", flush=True)
            if not ok:
                failures.append(f"{name} seed {seed}")
    print(f"run_study: done in {(time.time() - started) / 60:.1f} min; results in {out}", flush=True)
    if failures:
        raise SystemExit(f"run_study: {len(failures)} runs failed: {', '.join(failures)} (rerun to retry them)")


if __name__ == "__main__":
    main()
